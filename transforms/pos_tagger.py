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

from polycap.transforms import process_memory
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


# spaCy builds a pipeline's tokenizer from its language's defaults (English: some 1,300 special
# cases, ~0.25 s), then replaces every part of it with the tokenizer saved with the model. Where
# the model keeps spaCy's standard tokenizer, it is built empty instead: the saved one is then
# all there is, the same tokenizer (tests/test_propn.py compares their bytes) 0.25 s sooner.
_STANDARD_TOKENIZER = "spacy.Tokenizer.v1"
_EMPTY_TOKENIZER = "polycap.empty_tokenizer.v1"


def _empty_tokenizer():
    from spacy.tokenizer import Tokenizer

    return lambda nlp: Tokenizer(nlp.vocab)


def _keeps_saved_standard_tokenizer(model: str) -> bool:
    """Whether ``model``'s config names spaCy's standard tokenizer and the model folder holds
    the one it saved (where ``spacy.load`` reads them: a package's data folder, or the path)."""
    import spacy.util

    folder = _model_meta_dir(model)
    if folder is None:
        return False
    try:
        if spacy.util.is_package(model):
            meta = spacy.util.get_model_meta(folder)
            folder = folder / f"{meta['lang']}_{meta['name']}-{meta['version']}"
        tokenizer = spacy.util.load_config(folder / "config.cfg")["nlp"]["tokenizer"]
    except (OSError, KeyError, ValueError):  # spacy.load says what is wrong with the model
        return False
    return tokenizer.get("@tokenizers") == _STANDARD_TOKENIZER and (folder / "tokenizer").is_file()


@functools.lru_cache(maxsize=None)
def load_spacy_tagger(model: str):
    """The spaCy pipeline of ``model`` (package name or path) with only the POS components;
    loaded once per process, shared by every tagging step and thread (``tagger_for``)."""
    import spacy

    process_memory.return_freed_memory()  # as for the scorer's model (encoders.load_encoder)
    overrides = {}
    if _keeps_saved_standard_tokenizer(model):
        spacy.registry.tokenizers.register(_EMPTY_TOKENIZER, func=_empty_tokenizer)
        overrides = {"nlp": {"tokenizer": {"@tokenizers": _EMPTY_TOKENIZER}}}
    try:
        nlp = spacy.load(model, exclude=list(_EXCLUDED), config=overrides)
    except OSError as error:
        raise ConfigError(f"propn.model: cannot load spaCy model {model!r}: {error}") from None
    if overrides:  # what it holds is spaCy's standard tokenizer: its config says so, if saved
        config = nlp.config
        config["nlp"]["tokenizer"] = {"@tokenizers": _STANDARD_TOKENIZER}
        nlp.config = config
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
