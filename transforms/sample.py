"""Sample N captions per target language, reproducibly.

Each caption gets a rank ``sha256("<seed>:<lang>:<caption_id>")`` and the N smallest ranks per
language are kept (bottom-k by a keyed hash). The sample depends only on the seed, the language
and the caption ids: not on input order, runner, worker count or process. With ``shared: true``
the rank leaves out the language, so every language gets the same captions. Captions not sampled
are not rows of the output; the audit counts them as ``eligible - sampled``.
Holds in memory: N (rank, caption) entries per language on the worker that combines that language.

``max_per_image: k``: at most k captions of one image per language (per sample with ``shared``),
the k of smallest rank: so N pairs cover as many distinct images as the data allows. An image is
``<dataset>:<image_id>`` (COCO, VizWiz, Multi30k), else its URL (GCC), else the caption alone.
The sample is then "walk down the rank order, take a caption while its image has fewer than k
taken, until N": per (language, image) the k smallest ranks, then the N smallest of those.

Because a caption's rank does not depend on anything an earlier stage computes, the captions
sampling can still choose are known before the PROPN filter runs (``SampleCandidates``): each
language's ``ceil(N * preselect_margin)`` smallest ranks (after the image cap).
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterator, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from pydantic import Field

from polycap.transforms.outputs import StageOutput
from polycap.transforms.records import Caption, Pair, Stage
from polycap.transforms.section import Section

_SHARED = "*"


class SampleConfig(Section):
    per_language: int = Field(ge=1)
    seed: int = 0
    shared: bool = False
    # POS-tag only each language's ceil(per_language * margin) best-ranked captions (all of them
    # after a shortfall; see propn.py); the sample is the same either way.
    # null: tag every caption, so the audit's PROPN count covers the whole input.
    preselect_margin: Optional[float] = Field(default=1.25, ge=1)
    # At most this many captions of one image per language; null: no cap.
    max_per_image: Optional[int] = Field(default=None, ge=1)
    # Quota fill (fill.py): per_language counts accepted pairs, drawn in up to fill_rounds
    # rounds, at most ceil(per_language * fill_max_draw) captions of a language in all.
    fill: bool = False
    fill_rounds: int = Field(default=3, ge=1, le=10)
    fill_max_draw: float = Field(default=3.0, ge=1)

    @property
    def drawn_at_most(self) -> int:
        """The most captions of one language this run can draw: what candidates must cover."""
        return math.ceil(self.per_language * self.fill_max_draw) if self.fill else self.per_language


def sample_rank(seed: int, caption_id: str, lang: str = _SHARED) -> str:
    """The caption's place in the sample order of ``lang``; smaller is sampled first."""
    key = f"{seed}:{caption_id}" if lang == _SHARED else f"{seed}:{lang}:{caption_id}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def pair_rank(cfg: SampleConfig, pair: Pair) -> str:
    """The sample rank the pair was drawn by."""
    return sample_rank(cfg.seed, pair.caption_id, _SHARED if cfg.shared else pair.target_lang)


def sample_keys(cfg: SampleConfig, languages: Sequence[str]) -> tuple[str, ...]:
    """One sample per language, or one for all with ``shared``."""
    return (_SHARED,) if cfg.shared else tuple(languages)


def image_of(caption: Caption) -> str:
    """The image a caption describes, as ``max_per_image`` counts it."""
    if caption.image_id:
        return f"{caption.dataset}:{caption.image_id}"
    if caption.image_url:
        return f"url:{caption.image_url}"
    return f"caption:{caption.caption_id}"


class CapPerImage(beam.PTransform):
    """PCollection[(key, (rank, Caption-or-image))] -> the same, at most ``k`` entries per (key,
    image): those of smallest rank. ``k`` None passes everything through."""

    def __init__(self, k: Optional[int]):
        super().__init__()
        self._k = k

    def expand(self, ranked):
        if self._k is None:
            return ranked

        def by_image(entry):
            key, (rank, what) = entry
            return (key, what if isinstance(what, str) else image_of(what)), (rank, what)

        return (
            ranked
            | "ByImage" >> beam.Map(by_image)
            | "SmallestPerImage" >> beam.combiners.Top.SmallestPerKey(self._k)
            | "Capped" >> beam.FlatMap(lambda group: ((group[0][0], entry) for entry in group[1]))
        )


def candidate_of(caption: Caption, seed: int, cutoffs: dict, keys: Sequence[str]) -> Iterator[str]:
    """The sample keys (languages) among whose candidates the caption is. A key absent from
    ``cutoffs``, or with cutoff None, has no more captions than candidates: all are candidates."""
    for key in keys:
        cutoff = cutoffs.get(key)
        if cutoff is None or sample_rank(seed, caption.caption_id, key) <= cutoff:
            yield key


class SampleCandidates(beam.PTransform):
    """PCollection[Caption] -> PCollection[(sample key, cutoff rank or None)]: the largest rank
    among each key's ``ceil(drawn_at_most * preselect_margin)`` smallest, None where the key has
    no more captions than that (every caption is a candidate). Use with ``candidate_of``."""

    def __init__(self, cfg: SampleConfig, languages: Sequence[str]):
        super().__init__()
        if cfg.preselect_margin is None:
            raise ValueError("SampleCandidates needs sample.preselect_margin")
        self._cfg = cfg
        self._keys = sample_keys(cfg, languages)

    def expand(self, captions):
        seed, keys = self._cfg.seed, self._keys
        per_key = math.ceil(self._cfg.drawn_at_most * self._cfg.preselect_margin)

        def ranks(caption: Caption):
            image = image_of(caption)
            for key in keys:
                yield key, (sample_rank(seed, caption.caption_id, key), image)

        def cutoff(keyed_ranks):
            key, smallest = keyed_ranks
            return key, max(rank for rank, _ in smallest) if len(smallest) == per_key else None

        return (
            captions
            | "Rank" >> beam.FlatMap(ranks).with_output_types(Tuple[str, Tuple[str, str]])
            | "CapPerImage" >> CapPerImage(self._cfg.max_per_image)
            | "SmallestRanks" >> beam.combiners.Top.SmallestPerKey(per_key)
            | "Cutoff" >> beam.Map(cutoff)
        )


class RankedSample(beam.PTransform):
    """PCollection[Caption] -> PCollection[(sample key, [(rank, Caption)])]: each key's ``n``
    smallest ranks after the image cap, smallest first."""

    def __init__(self, cfg: SampleConfig, languages: Sequence[str], n: int):
        super().__init__()
        self._cfg = cfg
        self._keys = sample_keys(cfg, languages)
        self._n = n

    def expand(self, captions):
        seed, keys = self._cfg.seed, self._keys

        def ranked(caption: Caption):
            for key in keys:
                yield key, (sample_rank(seed, caption.caption_id, key), caption)

        return (
            captions
            | "Rank" >> beam.FlatMap(ranked).with_output_types(Tuple[str, Tuple[str, Caption]])
            | "CapPerImage" >> CapPerImage(self._cfg.max_per_image)
            | "SmallestRanks" >> beam.combiners.Top.SmallestPerKey(self._n)
        )


def languages_of(key: str, languages: Sequence[str]) -> Sequence[str]:
    """The languages a sample key serves."""
    return languages if key == _SHARED else (key,)


class SampleCaptions(beam.PTransform):
    """PCollection[Caption] -> StageOutput(kept=Pair per sampled caption and language, translation
    empty; counts=("sampled", {language: pairs})): at most ``per_language`` captions for each
    target language. Samples nothing away as a row: what is not sampled stays eligible."""

    def __init__(self, cfg: SampleConfig, languages: Sequence[str]):
        super().__init__()
        self._cfg = cfg
        self._languages = tuple(languages)

    def expand(self, captions):
        languages = self._languages

        def pairs(keyed_sample):
            key, ranked_captions = keyed_sample
            counter = Metrics.counter(Stage.SAMPLE.value, "sampled")
            for lang in languages_of(key, languages):
                for _, caption in ranked_captions:
                    counter.inc()
                    yield Pair.for_language(caption, lang)

        sampled = (
            captions
            | "Ranked" >> RankedSample(self._cfg, languages, self._cfg.per_language)
            | "ToPairs" >> beam.FlatMap(pairs).with_output_types(Pair)
        )
        counts = (
            sampled
            | "SampledLanguage" >> beam.Map(lambda pair: pair.target_lang)
            | "CountSampled" >> beam.combiners.Count.PerElement()
            | "SampledToDict" >> beam.combiners.ToDict()
            | "SampledNamed" >> beam.Map(lambda counted: ("sampled", counted))
        )
        return StageOutput(kept=sampled, counts=counts)
