"""Drop captions that are mostly proper nouns (clip-italian's rule: PROPN share >= 0.8).

A caption like "Lionel Messi of FC Barcelona" names things instead of describing the image; a
translator has little to translate and a captioning model little to learn from it.

PCollection[Caption] (cleaned text) -> StageOutput:
- ``kept``: the Caption with ``propn_ratio`` set;
- ``rejected``: Rejected, stage ``propn``, reason ``propn`` (ratio >= ``max_propn_ratio``);
- ``failed``: Failed, stage ``propn``, reason ``invalid_text`` (the text is not a string spaCy
  can take; checked before tagging) or ``tagger_error`` (spaCy raised on the row's batch: every
  row of that batch fails, with the exception's text).

Tagging runs in ``RunInference``: one spaCy pipeline per worker process (tok2vec, tagger and
attribute_ruler only: ``pos_`` is the same as the full pipeline's for PROPN, 2.7x faster),
``nlp.pipe`` over fixed-size batches of ``batch_size`` captions.
"""

from __future__ import annotations

import enum
import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from polycap.pipeline.config import PropnConfig
from polycap.transforms.errors import ConfigError
from polycap.transforms.outputs import FAILED, REJECTED, StageOutput
from polycap.transforms.records import Caption, Failed, Stage, fail, failed_batch, reject

# What POS tagging needs: tagger + attribute_ruler (English: tag_ -> pos_) or a morphologizer
# (most other spaCy languages), and the tok2vec they listen to.
POS_COMPONENTS = ("tok2vec", "tagger", "attribute_ruler", "morphologizer")
# Not even loaded: the rest of a standard spaCy pipeline. Anything else a custom model carries
# is loaded but disabled (see ``load_spacy_tagger``).
_EXCLUDED = ("parser", "senter", "ner", "lemmatizer", "trainable_lemmatizer", "entity_ruler",
             "entity_linker", "span_ruler", "spancat", "textcat", "textcat_multilabel")
# spaCy's default ``nlp.max_length``; a longer text raises inside ``nlp.pipe``.
MAX_TEXT_CHARS = 1_000_000
_NOT_COUNTED = frozenset({"PUNCT", "SPACE"})


class Reason(str, enum.Enum):
    PROPN = "propn"
    INVALID_TEXT = "invalid_text"
    TAGGER_ERROR = "tagger_error"


def propn_ratio(pos_tags: Iterable[str]) -> float:
    """Share of PROPN among the tokens that are not PUNCT or SPACE (SYM counts); 0.0 for none."""
    counted = [tag for tag in pos_tags if tag not in _NOT_COUNTED]
    if not counted:
        return 0.0
    return sum(tag == "PROPN" for tag in counted) / len(counted)


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


def check_model(cfg: PropnConfig) -> None:
    """Raise ConfigError unless ``cfg.model`` is an installed spaCy model package or a model
    directory whose pipeline can tag parts of speech. Reads meta.json only, loads no weights."""
    import spacy.util

    folder = _model_meta_dir(cfg.model)
    meta_file = folder / "meta.json" if folder is not None else None
    if meta_file is None or not meta_file.is_file():
        raise ConfigError(
            f"propn.model: {cfg.model!r} is neither an installed spaCy model package nor a "
            "spaCy model directory (with config.cfg and meta.json)"
        )
    pipeline = spacy.util.load_meta(meta_file).get("pipeline", [])
    if "morphologizer" not in pipeline and not {"tagger", "attribute_ruler"} <= set(pipeline):
        raise ConfigError(
            f"propn.model: {cfg.model!r} has no part-of-speech tagger "
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
    """Captions in, ``PredictionResult(caption, propn_ratio)`` out; one spaCy model per process.

    ``load_tagger(model)`` returns an object with spaCy's ``pipe(texts, batch_size=)``; tests
    pass a fake."""

    def __init__(self, cfg: PropnConfig, load_tagger: Callable[[str], Any] = load_spacy_tagger):
        super().__init__()
        self._model_name = cfg.model
        self._batch_size = cfg.batch_size
        self._load_tagger = load_tagger

    def load_model(self):
        return self._load_tagger(self._model_name)

    def run_inference(self, batch: Sequence[Caption], model, inference_args=None):
        docs = model.pipe([caption.text for caption in batch], batch_size=self._batch_size)
        return [
            PredictionResult(caption, propn_ratio(token.pos_ for token in doc))
            for caption, doc in zip(batch, docs, strict=True)
        ]

    def batch_elements_kwargs(self):
        # Adaptive batching kept batches at 13-25 on small inputs and cost ~35 % (FACTS.md).
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}


class _ValidateFn(beam.DoFn):
    def process(self, caption: Caption):
        problem = invalid_text(caption.text)
        if problem is None:
            yield caption
        else:
            Metrics.counter(Stage.PROPN.value, Reason.INVALID_TEXT.value).inc()
            yield beam.pvalue.TaggedOutput(
                FAILED, fail(caption, Stage.PROPN, Reason.INVALID_TEXT, problem)
            )


class _JudgeFn(beam.DoFn):
    def __init__(self, max_propn_ratio: float):
        self._max = max_propn_ratio
        self._kept = Metrics.counter(Stage.PROPN.value, "kept")
        self._rejected = Metrics.counter(Stage.PROPN.value, Reason.PROPN.value)

    def process(self, result: PredictionResult):
        caption = result.example._replace(propn_ratio=result.inference)
        if caption.propn_ratio >= self._max:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTED, reject(caption, Stage.PROPN, Reason.PROPN))
        else:
            self._kept.inc()
            yield caption


class DropProperNounCaptions(beam.PTransform):
    """PCollection[Caption] -> StageOutput(kept=Caption with ``propn_ratio``, rejected=Rejected
    ``propn``, failed=Failed ``invalid_text`` / ``tagger_error``). See the module docstring."""

    def __init__(self, cfg: PropnConfig, load_tagger: Callable[[str], Any] = load_spacy_tagger):
        super().__init__()
        self._cfg = cfg
        self._load_tagger = load_tagger

    def expand(self, captions):
        valid = captions | "Validate" >> beam.ParDo(_ValidateFn()).with_outputs(
            FAILED, main="valid"
        )
        tagged, errors = valid.valid | "Tag" >> RunInference(
            PosTagHandler(self._cfg, self._load_tagger)
        ).with_exception_handling()
        judged = tagged | "Judge" >> beam.ParDo(_JudgeFn(self._cfg.max_propn_ratio)).with_outputs(
            REJECTED, main="kept"
        )
        tagger_failed = errors.failed_inferences | "TaggerFailed" >> beam.FlatMap(
            failed_batch, Stage.PROPN, Reason.TAGGER_ERROR
        ).with_output_types(Failed)
        failed = (valid[FAILED], tagger_failed) | "Failed" >> beam.Flatten()
        return StageOutput(kept=judged.kept, rejected=judged[REJECTED], failed=failed)
