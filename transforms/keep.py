"""Decide which scored pairs to accept; the score stage has already attached ``similarity``.

PCollection[Pair] (scored) -> StageOutput:
- ``kept``: the accepted Pairs;
- ``rejected``: Rejected, stage ``keep``, with the pair's similarity, reason
  - ``untranslated``: the translation is the source text again or missing
    (``text.is_untranslated``); judged first, whatever the score (a provider that echoes the
    source would score ~1.0);
  - the pair checks' reasons (``checks.CheckReason``: ``repetition``, ``partial_echo``,
    ``wrong_language``, ``number_mismatch``, ``name_missing``, ``length_ratio``), each check
    switchable in ``keep.checks``; judged next, whatever the score, on every translated pair
    whoever translated it (the memory too);
  - ``low_similarity``: below ``min_similarity``, or outside the best ``keep_top_fraction`` of
    its target language; a pair without a finite score is never accepted.

The score decided on is ``similarity`` (the cosine), or with ``score.margin`` (``KeepPairs(cfg,
margin=True)``) the pair's ``margin``: ``min_similarity`` is then a ratio-margin threshold (about
1.0 and up: 1.0 means "fits as well as its neighbours"; ``pipeline/config.py`` checks each
range), and the top fraction and ``memory_share`` rank by the margin.

``memory_share`` s (with ``min_similarity``): where the translation memory translated some of a
language's pairs (human translations, ``provider`` ``memory``, that pass the checks), that
language's threshold rises to the score of the last of the best ceil(s * m) of its m memory
pairs, so about s of the human translations would be accepted; ``min_similarity`` stays the
floor, and the threshold of every other language. The thresholds leave as ``counts``
(``thresholds``: {language: {min_similarity, human_pairs}}) for the audit.

``keep_top_fraction`` f: for each target language with n translated, scored pairs that pass
the checks, the best
ceil(f * n) are accepted, ranked by similarity (highest first), ties broken by ``caption_id``
(smallest first). Every (similarity, caption_id) of a language is gathered in one combiner
accumulator (tens of bytes per pair: ~100 MB for a million pairs of one language), which
yields that language's cutoff; the cutoffs, one per language, reach the decision as a side
input. The result depends only on the scores and ids, not on input order or worker count;
it assumes ``caption_id`` is unique within a language (sampling makes one pair per caption).
"""

from __future__ import annotations

import enum
import math
from fractions import Fraction
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from pydantic import Field, model_validator

from polycap.transforms.checks import CheckReason, ChecksConfig, Judged, PairChecks
from polycap.transforms.outputs import KEPT, REJECTED, StageOutput
from polycap.transforms.records import Pair, Stage, reject
from polycap.transforms.section import Section
from polycap.transforms.translate import MEMORY_PROVIDER
from polycap.transforms.text import is_untranslated


# min_similarity's range: a cosine in [-1, 1]; a ratio margin (score.margin) in (0, MAX_MARGIN]
# (a cosine of at most 1 over neighbourhoods that real encoders put above 1/3).
MAX_MARGIN = 3.0


class KeepConfig(Section):
    """Accept where the score >= ``min_similarity``, or the best ``keep_top_fraction``."""

    # A cosine or, with score.margin, a margin: the whole config (pipeline/config.py) checks
    # the range of the score in use.
    min_similarity: Optional[float] = Field(default=None, ge=-1.0)
    keep_top_fraction: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    # Raise a language's threshold to keep this share of the memory's human translations of it.
    memory_share: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    checks: ChecksConfig = ChecksConfig()

    @model_validator(mode="after")
    def _exactly_one_rule(self) -> "KeepConfig":
        if (self.min_similarity is None) == (self.keep_top_fraction is None):
            raise ValueError("set exactly one of min_similarity and keep_top_fraction")
        if self.memory_share is not None and self.min_similarity is None:
            raise ValueError("memory_share raises min_similarity per language: set min_similarity")
        return self


class Reason(str, enum.Enum):
    UNTRANSLATED = "untranslated"
    LOW_SIMILARITY = "low_similarity"


SIMILARITY, MARGIN = "similarity", "margin"  # the Pair fields a decision can rank by


def score_field(margin: bool) -> str:
    return MARGIN if margin else SIMILARITY


def is_scored(pair: Pair, field: str = SIMILARITY) -> bool:
    score = getattr(pair, field)
    return score is not None and math.isfinite(score)


def top_count(fraction: float, n: int) -> int:
    """ceil(fraction * n), exact for decimal fractions (0.3 of 10 is 3, not 4 as in floats)."""
    return math.ceil(Fraction(str(fraction)) * n)


def rank_key(pair: Pair, field: str = SIMILARITY) -> tuple[float, str]:
    """Sorts the best pair first: highest score (``field``), then smallest ``caption_id``."""
    return (-getattr(pair, field), pair.caption_id)


class _Cutoff(beam.CombineFn):
    """The rank key of the last pair accepted among one language's rank keys."""

    def __init__(self, fraction: float):
        self._fraction = fraction

    def create_accumulator(self):
        return []

    def add_input(self, keys, key):
        keys.append(key)
        return keys

    def merge_accumulators(self, accumulators):
        return [key for keys in accumulators for key in keys]

    def extract_output(self, keys):
        return sorted(keys)[top_count(self._fraction, len(keys)) - 1]


# Pairs judged at once: lingua runs over a batch's translations in parallel (``checks.py``), and
# each call costs milliseconds whatever its size. Fixed, not BatchElements' adaptive size, which
# kept batches at 20-60 pairs: on 10,000 pairs lingua took 4.0 s in batches of ~45, 2.2 s in
# batches of 256 and 1.9 s of 1,024. A pair's verdict does not depend on its batch-mates.
CHECK_BATCH = 1024


class _CheckFn(beam.DoFn):
    """A batch of pairs -> each pair that fails a pair check (``checks.py``) rejected with the
    check's reason; the rest passed on, the untranslated ones too (``_DecideFn`` rejects those)."""

    def __init__(self, cfg: ChecksConfig):
        self._cfg = cfg
        self._counters = {r: Metrics.counter(Stage.KEEP.value, r.value) for r in CheckReason}

    def setup(self):
        self._checks = PairChecks(self._cfg)  # lingua's detectors, built once per worker

    def process(self, batch: list[Pair]):
        translated = [p for p in batch if not is_untranslated(p.source_text, p.translated_text)]
        reasons = self._checks.reasons(
            [Judged(p.source_text, p.source_lang, p.translated_text, p.target_lang) for p in translated]
        )
        failed = {id(pair): reason for pair, reason in zip(translated, reasons) if reason}
        for pair in batch:
            reason = failed.get(id(pair))
            if reason is None:
                yield pair
            else:
                self._counters[reason].inc()
                yield beam.pvalue.TaggedOutput(REJECTED, reject(pair, Stage.KEEP, reason))


class _MemoryThreshold(_Cutoff):
    """One language's threshold from the rank keys of its memory pairs: the score of the last
    of the best ``share`` of them, at least ``floor``."""

    def __init__(self, share: float, floor: float):
        super().__init__(share)
        self._floor = floor

    def extract_output(self, keys):
        score = -super().extract_output(keys)[0]
        return {"min_similarity": max(self._floor, score), "human_pairs": len(keys)}


class _DecideFn(beam.DoFn):
    """Accepts a pair when its rule does: ``min_similarity`` (raised per language by
    ``thresholds``, language -> _MemoryThreshold's output, where given), or else ``cutoffs``
    (language -> rank key of the last pair accepted) for the top fraction."""

    def __init__(self, min_similarity: Optional[float], field: str):
        self._min = min_similarity
        self._field = field
        self._kept = Metrics.counter(Stage.KEEP.value, KEPT)
        self._counters = {r: Metrics.counter(Stage.KEEP.value, r.value) for r in Reason}

    def _reason(self, pair: Pair, cutoffs, thresholds) -> Optional[Reason]:
        if is_untranslated(pair.source_text, pair.translated_text):
            return Reason.UNTRANSLATED
        if not is_scored(pair, self._field):
            return Reason.LOW_SIMILARITY
        if self._min is not None:
            threshold = (thresholds or {}).get(pair.target_lang, {}).get("min_similarity", self._min)
            accepted = getattr(pair, self._field) >= threshold
        else:
            accepted = rank_key(pair, self._field) <= cutoffs[pair.target_lang]
        return None if accepted else Reason.LOW_SIMILARITY

    def process(self, pair: Pair, cutoffs=None, thresholds=None):
        reason = self._reason(pair, cutoffs, thresholds)
        if reason is None:
            self._kept.inc()
            yield pair
        else:
            self._counters[reason].inc()
            yield beam.pvalue.TaggedOutput(REJECTED, reject(pair, Stage.KEEP, reason))


class KeepPairs(beam.PTransform):
    """PCollection[Pair] (scored) -> StageOutput(kept=accepted Pair, rejected=Rejected
    ``untranslated`` / a check's reason / ``low_similarity``, with its similarity; counts: the
    thresholds ``memory_share`` set, None without it). ``margin``: decide on the pairs'
    ``margin`` (``score.margin``), not their cosine. See the module docstring."""

    def __init__(self, cfg: KeepConfig, margin: bool = False):
        super().__init__()
        self._cfg = cfg
        self._field = score_field(margin)

    def expand(self, pairs):
        checked = (
            pairs
            | "BatchForChecks" >> beam.BatchElements(min_batch_size=CHECK_BATCH, max_batch_size=CHECK_BATCH)
            | "Check" >> beam.ParDo(_CheckFn(self._cfg.checks)).with_outputs(REJECTED, main=KEPT)
        )
        pairs = checked[KEPT]
        counts, field = None, self._field
        if self._cfg.memory_share is not None:
            thresholds = (
                pairs
                | "HumanPairs" >> beam.Filter(
                    lambda p: p.provider == MEMORY_PROVIDER and is_scored(p, field)
                    and not is_untranslated(p.source_text, p.translated_text)
                )
                | "HumanRankKey" >> beam.Map(lambda p: (p.target_lang, rank_key(p, field)))
                | "HumanThreshold" >> beam.CombinePerKey(
                    _MemoryThreshold(self._cfg.memory_share, self._cfg.min_similarity)
                )
            )
            decided = pairs | "Threshold" >> beam.ParDo(
                _DecideFn(self._cfg.min_similarity, field), thresholds=beam.pvalue.AsDict(thresholds)
            ).with_outputs(REJECTED, main=KEPT)
            counts = (
                thresholds
                | "AllThresholds" >> beam.combiners.ToDict()
                | "ThresholdCounts" >> beam.Map(lambda by_language: ("thresholds", by_language))
            )
        elif self._cfg.keep_top_fraction is None:
            decided = pairs | "Threshold" >> beam.ParDo(
                _DecideFn(self._cfg.min_similarity, field)
            ).with_outputs(REJECTED, main=KEPT)
        else:
            cutoffs = (
                pairs
                | "Rankable"
                >> beam.Filter(
                    lambda p: is_scored(p, field) and not is_untranslated(p.source_text, p.translated_text)
                )
                | "RankKey" >> beam.Map(lambda p: (p.target_lang, rank_key(p, field)))
                | "Cutoff" >> beam.CombinePerKey(_Cutoff(self._cfg.keep_top_fraction))
            )
            decided = pairs | "TopFraction" >> beam.ParDo(
                _DecideFn(None, field), cutoffs=beam.pvalue.AsDict(cutoffs)
            ).with_outputs(REJECTED, main=KEPT)
        rejected = (checked[REJECTED], decided[REJECTED]) | "AllRejected" >> beam.Flatten()
        return StageOutput(kept=decided[KEPT], rejected=rejected, counts=counts)
