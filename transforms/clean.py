"""Normalise caption text and reject captions no translator should see.

Rules: Unicode NFC; control and format characters removed; runs of whitespace collapsed to one
space; leading and trailing space stripped. Rejects with a reason of this stage:
``empty`` (nothing left), ``not_text`` (no letter at all: numbers, symbols, emoji), ``too_short``
(fewer than ``min_words`` words), ``too_long`` (over ``max_bytes`` UTF-8 bytes; AWS Translate
takes at most 10,000 bytes per request, so a caption over it could never be sent).
"""

from __future__ import annotations

import enum
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from pydantic import Field

from polycap.transforms.outputs import REJECTED, StageOutput
from polycap.transforms.providers.aws import MAX_REQUEST_BYTES
from polycap.transforms.records import Caption, Stage, reject
from polycap.transforms.section import Section
from polycap.transforms.text import normalise


class CleanConfig(Section):
    min_words: int = Field(default=3, ge=1)
    # A caption over AWS Translate's request limit could never be sent.
    max_bytes: int = Field(default=1_000, ge=1, le=MAX_REQUEST_BYTES)


class Reason(str, enum.Enum):
    EMPTY = "empty"
    NOT_TEXT = "not_text"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"


def judge(text: str, cfg: CleanConfig) -> Optional[Reason]:
    """The reason to reject an already normalised caption, or None to keep it."""
    if not text:
        return Reason.EMPTY
    if not any(char.isalpha() for char in text):
        return Reason.NOT_TEXT
    if len(text.split(" ")) < cfg.min_words:
        return Reason.TOO_SHORT
    if len(text.encode("utf-8")) > cfg.max_bytes:
        return Reason.TOO_LONG
    return None


class _CleanFn(beam.DoFn):
    def __init__(self, cfg: CleanConfig):
        self._cfg = cfg
        self._kept = Metrics.counter(Stage.CLEAN.value, "kept")

    def process(self, caption: Caption):
        cleaned = caption._replace(text=normalise(caption.text))
        reason = judge(cleaned.text, self._cfg)
        if reason is None:
            self._kept.inc()
            yield cleaned
        else:
            Metrics.counter(Stage.CLEAN.value, reason.value).inc()
            yield beam.pvalue.TaggedOutput(REJECTED, reject(cleaned, Stage.CLEAN, reason))


class CleanCaptions(beam.PTransform):
    """PCollection[Caption] (raw text) -> StageOutput(kept=Caption with normalised text,
    rejected=Rejected with stage ``clean`` and a ``Reason``)."""

    def __init__(self, cfg: CleanConfig):
        super().__init__()
        self._cfg = cfg

    def expand(self, captions):
        results = captions | "Normalise" >> beam.ParDo(_CleanFn(self._cfg)).with_outputs(
            REJECTED, main="kept"
        )
        return StageOutput(kept=results.kept, rejected=results[REJECTED])
