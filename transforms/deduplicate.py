"""Exact de-duplication on the normalised text.

Captions are grouped by ``match_key`` (normalised, casefolded, final punctuation dropped); the
caption with the smallest ``caption_id`` survives, so the survivor does not depend on input order,
runner or worker count. Every other caption of the group is rejected with reason ``duplicate``.
Holds in memory: the captions of one group at a time (one text's copies).
"""

from __future__ import annotations

import enum
from typing import Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from polycap.transforms.text import match_key
from polycap.transforms.outputs import REJECTED, StageOutput
from polycap.transforms.records import Caption, Rejected, Stage, reject


class Reason(str, enum.Enum):
    DUPLICATE = "duplicate"


class _KeepSmallestIdFn(beam.DoFn):
    def __init__(self):
        self._kept = Metrics.counter(Stage.DEDUPLICATE.value, "kept")
        self._duplicates = Metrics.counter(Stage.DEDUPLICATE.value, Reason.DUPLICATE.value)

    def process(self, keyed_group):
        _, captions = keyed_group
        survivor, *duplicates = sorted(captions, key=lambda caption: caption.caption_id)
        self._kept.inc()
        yield survivor
        for duplicate in duplicates:
            self._duplicates.inc()
            yield beam.pvalue.TaggedOutput(
                REJECTED, reject(duplicate, Stage.DEDUPLICATE, Reason.DUPLICATE)
            )


class DropDuplicateCaptions(beam.PTransform):
    """PCollection[Caption] (cleaned) -> StageOutput(kept=one Caption per text,
    rejected=Rejected with stage ``deduplicate``, reason ``duplicate``)."""

    def expand(self, captions):
        results = (
            captions
            | "KeyByText"
            >> beam.Map(lambda caption: (match_key(caption.text), caption)).with_output_types(
                Tuple[str, Caption]
            )
            | "GroupByText" >> beam.GroupByKey()
            | "KeepSmallestId" >> beam.ParDo(_KeepSmallestIdFn()).with_output_types(
                Caption, **{REJECTED: Rejected}
            ).with_outputs(REJECTED, main="kept")
        )
        return StageOutput(kept=results.kept, rejected=results[REJECTED])
