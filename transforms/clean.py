"""Normalise caption text and reject captions no translator should see.

Rules: Unicode NFC; control and format characters removed; runs of whitespace collapsed to one
space; leading and trailing space stripped. Rejects with a reason of this stage:
``empty`` (nothing left), ``not_text`` (no letter at all: numbers, symbols, emoji), ``too_short``
(fewer than ``min_words`` words), ``too_long`` (over ``max_bytes`` UTF-8 bytes; AWS Translate
takes at most 10,000 bytes per request, so a caption over it could never be sent).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from polycap.pipeline.config import CleanConfig
from polycap.transforms.outputs import REJECTED, StageOutput
from polycap.transforms.records import Caption, Stage, reject

_WHITESPACE = re.compile(r"\s+")
_TRAILING_PUNCTUATION = re.compile(r"[\s.!?;:,]+$")


class Reason(str, enum.Enum):
    EMPTY = "empty"
    NOT_TEXT = "not_text"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"


def normalise(text: str) -> str:
    """NFC, control/format characters dropped (whitespace ones become spaces), spaces collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(
        " " if char.isspace() else char
        for char in text
        if char.isspace() or unicodedata.category(char) not in ("Cc", "Cf")
    )
    return _WHITESPACE.sub(" ", text).strip()


def match_key(text: str) -> str:
    """The key two captions are "the same text" under: normalised, casefolded, without final
    punctuation. De-duplication, the translation memory and the untranslated check all use it."""
    return _TRAILING_PUNCTUATION.sub("", normalise(text).casefold())


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
