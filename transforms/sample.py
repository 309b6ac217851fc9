"""Sample N captions per target language, reproducibly.

Each caption gets a rank ``sha256("<seed>:<lang>:<caption_id>")`` and the N smallest ranks per
language are kept (bottom-k by a keyed hash). The sample depends only on the seed, the language
and the caption ids: not on input order, runner, worker count or process. With ``shared: true``
the rank leaves out the language, so every language gets the same captions. Captions not sampled
are not rows of the output; the audit counts them as ``eligible - sampled``.
Holds in memory: N (rank, caption) entries per language on the worker that combines that language.
"""

from __future__ import annotations

import hashlib
from typing import Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from polycap.pipeline.config import SampleConfig
from polycap.transforms.records import Caption, Pair

_SHARED = "*"


def sample_rank(seed: int, caption_id: str, lang: str = _SHARED) -> str:
    """The caption's place in the sample order of ``lang``; smaller is sampled first."""
    key = f"{seed}:{caption_id}" if lang == _SHARED else f"{seed}:{lang}:{caption_id}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def sample_keys(cfg: SampleConfig, languages: Sequence[str]) -> tuple[str, ...]:
    """One sample per language, or one for all with ``shared``."""
    return (_SHARED,) if cfg.shared else tuple(languages)


class SampleCaptions(beam.PTransform):
    """PCollection[Caption] -> PCollection[Pair] (translation empty): at most
    ``per_language`` captions for each target language."""

    def __init__(self, cfg: SampleConfig, languages: Sequence[str]):
        super().__init__()
        self._cfg = cfg
        self._languages = tuple(languages)

    def expand(self, captions):
        seed, languages = self._cfg.seed, self._languages
        keys = sample_keys(self._cfg, languages)

        def ranked(caption: Caption):
            for key in keys:
                yield key, (sample_rank(seed, caption.caption_id, key), caption)

        def pairs(keyed_sample):
            key, ranked_captions = keyed_sample
            for lang in languages if key == _SHARED else (key,):
                counter = Metrics.counter("sample", f"sampled_{lang}")
                for _, caption in ranked_captions:
                    counter.inc()
                    yield Pair.for_language(caption, lang)

        return (
            captions
            | "Rank" >> beam.FlatMap(ranked).with_output_types(Tuple[str, Tuple[str, Caption]])
            | "SmallestRanks" >> beam.combiners.Top.SmallestPerKey(self._cfg.per_language)
            | "ToPairs" >> beam.FlatMap(pairs).with_output_types(Pair)
        )
