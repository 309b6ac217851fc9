"""spaCy part-of-speech tagging for the PROPN stage: which models qualify, loading one per
process with only the components POS tags need, and a ``RunInference`` handler.

Tagging needs tok2vec, tagger and attribute_ruler only (English: ``tag_`` -> ``pos_``), or a
morphologizer (most other spaCy languages): ``pos_`` is the same as the full pipeline's and
tagging is 2.7x faster without the parser, NER and lemmatizer.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from polycap.transforms.errors import ConfigError
from polycap.transforms.records import Caption

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
    loaded once per process, shared by every tagging step (RunInference shares a model only
    within one step)."""
    import spacy

    try:
        nlp = spacy.load(model, exclude=list(_EXCLUDED))
    except OSError as error:
        raise ConfigError(f"propn.model: cannot load spaCy model {model!r}: {error}") from None
    others = [name for name in nlp.pipe_names if name not in POS_COMPONENTS]
    if others:
        nlp.select_pipes(disable=others)
    return nlp


class PosTagHandler(ModelHandler[Caption, PredictionResult, Any]):
    """Captions in, ``PredictionResult(caption, [pos_ of each token])`` out; one spaCy model per
    process. ``load_tagger(model)`` returns an object with spaCy's ``pipe(texts, batch_size=)``;
    tests pass a fake."""

    def __init__(self, model: str, batch_size: int,
                 load_tagger: Callable[[str], Any] = load_spacy_tagger):
        super().__init__()
        self._model_name = model
        self._batch_size = batch_size
        self._load_tagger = load_tagger

    def load_model(self):
        return self._load_tagger(self._model_name)

    def run_inference(self, batch: Sequence[Caption], model, inference_args=None):
        docs = model.pipe([caption.text for caption in batch], batch_size=self._batch_size)
        return [
            PredictionResult(caption, [token.pos_ for token in doc])
            for caption, doc in zip(batch, docs, strict=True)
        ]

    def batch_elements_kwargs(self):
        # Fixed batches: Beam's adaptive batching kept batches at 13-25 captions on small inputs
        # and cost ~35 % (docs/design-notes.md).
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}
