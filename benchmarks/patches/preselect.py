"""Preselect the captions sampling can still choose, so the PROPN tagger sees only those.

A LEVER MEASURED BY ``benchmarks/levers.py``: it copies this file to ``transforms/preselect.py``
in a scratch copy of the checkout and changes two lines of ``pipeline/graph.py`` (see
``levers.PRESELECT_GRAPH_EDITS``). Not part of polycap until someone moves it there.

Sampling keeps the ``per_language`` smallest ranks ``sha256(seed:lang:caption_id)`` per language
(``transforms/sample.py``), and a caption's rank does not depend on its PROPN ratio. So the final
sample is among the ``ceil(per_language * margin)`` smallest ranks of each language, as long as
the PROPN filter rejects (or fails) at most ``per_language * (margin - 1)`` of them: tag those
candidates only, then sample as before. With ``per_language`` much smaller than the number of
eligible captions, tagging drops from every caption to about ``languages * per_language *
margin`` of them. The rest are never tagged: they count as eligible (not sampled), so the audit's
``read = invalid + duplicate + propn + failed + eligible`` still holds.

PCollection[Caption] -> PCollection[Caption]: each candidate once.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import apache_beam as beam

from pipeline.config import SampleConfig
from transforms.records import Caption
from transforms.sample import sample_rank

_SHARED = "*"


class PreselectCaptions(beam.PTransform):
    def __init__(self, cfg: SampleConfig, languages: Sequence[str], margin: float = 1.25):
        super().__init__()
        self._cfg = cfg
        self._languages = tuple(languages)
        self._margin = margin

    def expand(self, captions):
        seed = self._cfg.seed
        keys = (_SHARED,) if self._cfg.shared else self._languages
        candidates = math.ceil(self._cfg.per_language * self._margin)

        def ranked(caption: Caption):
            for key in keys:
                yield key, (sample_rank(seed, caption.caption_id, key), caption)

        def by_id(keyed_sample):
            for _, caption in keyed_sample[1]:
                yield caption.caption_id, caption

        return (
            captions
            | "Rank" >> beam.FlatMap(ranked).with_output_types(Tuple[str, Tuple[str, Caption]])
            | "SmallestRanks" >> beam.combiners.Top.SmallestPerKey(candidates)
            | "ById" >> beam.FlatMap(by_id).with_output_types(Tuple[str, Caption])
            | "GroupById" >> beam.GroupByKey()
            | "OncePerCaption" >> beam.Map(lambda group: next(iter(group[1]))).with_output_types(Caption)
        )


def eligible_count(unique, tagged):
    """("eligible", n): captions that passed de-duplication minus those the PROPN stage
    rejected or failed; the captions never tagged count as eligible."""
    terms = [unique | "EligibleAll" >> beam.Map(lambda _: 1)]
    if tagged.rejected is not None:
        terms.append(tagged.rejected | "EligibleMinusRejected" >> beam.Map(lambda _: -1))
    if tagged.failed is not None:
        terms.append(tagged.failed | "EligibleMinusFailed" >> beam.Map(lambda _: -1))
    return (
        terms
        | "EligibleTerms" >> beam.Flatten()
        | "EligibleSum" >> beam.CombineGlobally(sum)
        | "EligibleNamed" >> beam.Map(lambda count: ("eligible", count))
    )
