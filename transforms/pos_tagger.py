"""spaCy part-of-speech tagging for the PROPN stage: which models qualify, and loading one per
process with only the components POS tags need.

Tagging needs tok2vec, tagger and attribute_ruler only (English: ``tag_`` -> ``pos_``), or a
morphologizer (most other spaCy languages): ``pos_`` is the same as the full pipeline's and
tagging is 2.7x faster without the parser, NER and lemmatizer.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from polycap.transforms.errors import ConfigError

# What POS tagging needs: tagger + attribute_ruler (English: tag_ -> pos_) or a morphologizer
# (most other spaCy languages), and the tok2vec they listen to.
POS_COMPONENTS = ("tok2vec", "tagger", "attribute_ruler", "morphologizer")
# Not even loaded: the rest of a standard spaCy pipeline. Anything else a custom model carries
# is loaded but disabled (see ``load_spacy_tagger``).
_EXCLUDED = ("parser", "senter", "ner", "lemmatizer", "trainable_lemmatizer", "entity_ruler",
             "entity_linker", "span_ruler", "spancat", "textcat", "textcat_multilabel")
# Components that compute with torch, which polycap's processes import spaCy without (torch_free).
TORCH_COMPONENTS = {"transformer", "curated_transformer"}
# spaCy's default ``nlp.max_length``; a longer text raises inside ``nlp.pipe``.
MAX_TEXT_CHARS = 1_000_000


def invalid_text(text: Any) -> Optional[str]:
    """Why spaCy cannot take ``text``, or None when it can."""
    if not isinstance(text, str):
        return f"text is not a string: {text!r}"
    if len(text) > MAX_TEXT_CHARS:
        return f"text has {len(text)} characters; spaCy takes at most {MAX_TEXT_CHARS}"
    return None


def _model_meta_dir(model: str) -> Optional[Path]:
    """The directory holding the model's meta.json: an installed package's or a model folder."""
    import spacy.util

    if spacy.util.is_package(model):
        try:
            return spacy.util.get_package_path(model)
        except ImportError:
            return None
    path = Path(model)
    return path if (path / "config.cfg").is_file() else None


def check_model(model: str) -> None:
    """Raise ConfigError (``propn.model``) unless ``model`` is an installed spaCy model package or
    a model directory whose pipeline can tag parts of speech. Reads meta.json only, loads no
    weights."""
    import spacy.util

    folder = _model_meta_dir(model)
    meta_file = folder / "meta.json" if folder is not None else None
    if meta_file is None or not meta_file.is_file():
        raise ConfigError(
            f"propn.model: {model!r} is neither an installed spaCy model package nor a "
            "spaCy model directory (with config.cfg and meta.json)"
        )
    pipeline = spacy.util.load_meta(meta_file).get("pipeline", [])
    if TORCH_COMPONENTS & set(pipeline):
        raise ConfigError(
            f"propn.model: {model!r} is a transformer pipeline; polycap tags with spaCy's CNN "
            "pipelines (such as en_core_web_sm), which run without torch"
        )
    if "morphologizer" not in pipeline and not {"tagger", "attribute_ruler"} <= set(pipeline):
        raise ConfigError(
            f"propn.model: {model!r} has no part-of-speech tagger "
            f"(its pipeline: {', '.join(pipeline) or 'empty'})"
        )


@functools.lru_cache(maxsize=None)
def load_spacy_tagger(model: str):
    """The spaCy pipeline of ``model`` (package name or path) with only the POS components;
    loaded once per process, shared by every tagging step and thread (``tagger_for``)."""
    import spacy

    try:
        nlp = spacy.load(model, exclude=list(_EXCLUDED))
    except OSError as error:
        raise ConfigError(f"propn.model: cannot load spaCy model {model!r}: {error}") from None
    others = [name for name in nlp.pipe_names if name not in POS_COMPONENTS]
    if others:
        nlp.select_pipes(disable=others)
    return nlp


_LOADING = threading.Lock()


def tagger_for(load: Callable[[str], Any], model: str):
    """``load(model)`` under a lock, so that the threads of a process that ask at once load the
    (cached) model once. ``load`` returns an object with spaCy's ``pipe(texts, batch_size=)``:
    ``load_spacy_tagger``, or a test's fake."""
    with _LOADING:
        return load(model)
