"""Import the two libraries that load torch without using it, with torch hidden.

Beam's RunInference module (``apache_beam.ml.inference.base``, through its model manager) and
thinc (spaCy's backend, ``thinc.compat``) import torch when it is installed, though neither needs
it for what they run here: RunInference without a model manager, and spaCy's CNN pipelines on
numpy. Both treat an ``ImportError`` as "torch is not installed". torch is installed for the
sentence-transformers scorer only, and costs every process that imports it ~2 s of CPU and
~210 MB of memory (measured: importing polycap's driver and tagging a caption took 3.6-3.8 s of
CPU and 269 MB with torch hidden, 5.3-6.2 s and 480 MB without).

``hide_torch_from`` imports them with ``sys.modules["torch"] = None`` (Python's way of saying
"not importable"), then removes that entry again, so that the sentence-transformers scorer, or
anything else that needs torch later in the same process, imports it as usual. Nothing is hidden
when torch is already imported. ``polycap.transforms``' ``__init__`` calls it, so it runs before
any stage imports either library, on the driver and in every worker process.

What this rules out: spaCy pipelines built on torch (``spacy-transformers``); ``propn.model``
refuses them (``pos_tagger.check_model``).
"""

from __future__ import annotations

import importlib
import sys

# The modules that import torch at import time, and what they do without it.
TORCH_OPTIONAL = (
    "apache_beam.ml.inference.base",  # ModelManager is None: polycap never asks for one
    "thinc.compat",  # has_torch is False: CNN pipelines compute with numpy ops
)


def hide_torch_from(modules=TORCH_OPTIONAL) -> None:
    """Import ``modules`` as if torch were not installed, unless torch is already imported."""
    if "torch" in sys.modules:
        return
    sys.modules["torch"] = None
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        if sys.modules.get("torch", False) is None:
            del sys.modules["torch"]
