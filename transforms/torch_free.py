"""Import the library that loads torch without using it, with torch hidden.

thinc (spaCy's backend, ``thinc.compat``) imports torch when it is installed, though spaCy's CNN
pipelines, the only ones polycap tags with, compute on numpy; it treats an ``ImportError`` as
"torch is not installed". torch is installed for the sentence-transformers scorer only, and
costs every process that imports it ~2 s of CPU and ~210 MB of memory (measured: importing
polycap's driver and tagging a caption took 3.6-3.8 s of CPU and 269 MB with torch hidden,
5.3-6.2 s and 480 MB without). (Beam's RunInference module imports torch too; polycap does not
use it: the PROPN and score stages batch in DoFns of their own.)

``hide_torch_from`` imports it with ``sys.modules["torch"] = None`` (Python's way of saying
"not importable"), then removes that entry again, so that the sentence-transformers scorer, or
anything else that needs torch later in the same process, imports it as usual. Nothing is hidden
when torch is already imported. ``polycap.transforms``' ``__init__`` calls it, so it runs before
any stage imports it, on the driver and in every worker process.

What this rules out: spaCy pipelines built on torch (``spacy-transformers``); ``propn.model``
refuses them (``pos_tagger.check_model``).
"""

from __future__ import annotations

import importlib
import sys

# The modules that import torch at import time, and what they do without it.
TORCH_OPTIONAL = (
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
