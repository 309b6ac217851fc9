"""The typed records that cross stage boundaries, and the rows polycap writes.

Every record is a NamedTuple with a Beam schema (RowCoder), so runners encode them compactly
and portable runners can carry them across languages.

- ``Caption``: one English caption as read (``text`` raw), then cleaned (``text`` normalised),
  then tagged (``propn_ratio`` set).
- ``Pair``: one sampled caption bound to one target language; the translate stage fills
  ``translated_text`` and ``provider``, the score stage ``similarity`` (the cosine) and, with
  ``score.margin``, ``margin`` (the ratio margin, ``margin.py``; null without it). ``sent_text``:
  the text sent to MT where it is not the caption (a shouting caption recased,
  ``text.text_for_mt``; null for the memory's translations and where the caption was sent).
- ``Rejected``: a row a stage decided against, with the stage and a reason from that stage's
  closed set.
- ``Failed``: a row a stage could not process, with the stage, an error kind and the error text.
- ``MemoryEntry``: one human translation from the translation memory.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Optional, Union

import apache_beam as beam


class Stage(str, enum.Enum):
    READ = "read"
    CLEAN = "clean"
    DEDUPLICATE = "deduplicate"
    PROPN = "propn"
    SAMPLE = "sample"  # rejects nothing: what is not sampled stays eligible
    TRANSLATE = "translate"
    SCORE = "score"
    KEEP = "keep"
    FILL = "fill"  # quota fill: accepted pairs beyond per_language (fill.py)


class Caption(NamedTuple):
    caption_id: str
    dataset: str
    image_id: Optional[str]
    image_url: Optional[str]
    source_lang: str
    text: str
    propn_ratio: Optional[float] = None


class Pair(NamedTuple):
    caption_id: str
    dataset: str
    image_id: Optional[str]
    image_url: Optional[str]
    source_lang: str
    target_lang: str
    source_text: str
    propn_ratio: Optional[float] = None
    translated_text: Optional[str] = None
    provider: Optional[str] = None
    similarity: Optional[float] = None
    margin: Optional[float] = None
    sent_text: Optional[str] = None

    @classmethod
    def for_language(cls, caption: Caption, target_lang: str) -> "Pair":
        return cls(
            caption_id=caption.caption_id,
            dataset=caption.dataset,
            image_id=caption.image_id,
            image_url=caption.image_url,
            source_lang=caption.source_lang,
            target_lang=target_lang,
            source_text=caption.text,
            propn_ratio=caption.propn_ratio,
        )


class Rejected(NamedTuple):
    caption_id: str
    dataset: str
    image_id: Optional[str]
    image_url: Optional[str]
    source_lang: str
    target_lang: Optional[str]
    source_text: Optional[str]
    propn_ratio: Optional[float]
    translated_text: Optional[str]
    provider: Optional[str]
    similarity: Optional[float]
    margin: Optional[float]
    sent_text: Optional[str]
    stage: str
    reason: str


class Failed(NamedTuple):
    caption_id: str
    dataset: str
    image_id: Optional[str]
    image_url: Optional[str]
    source_lang: str
    target_lang: Optional[str]
    source_text: Optional[str]
    propn_ratio: Optional[float]
    translated_text: Optional[str]
    provider: Optional[str]
    similarity: Optional[float]
    margin: Optional[float]
    sent_text: Optional[str]
    stage: str
    reason: str
    error: str


class MemoryEntry(NamedTuple):
    source_lang: str
    target_lang: str
    source_text: str
    translated_text: str


def _known_columns(record: Union[Caption, Pair]) -> dict:
    """The output columns a record already knows; the rest stay null.

    Works by field name, not type: in another worker process RowCoder rebuilds a Caption or a
    Pair as an equivalent generated row type."""
    columns = {name: getattr(record, name, None) for name in Pair._fields}
    if "text" in record._fields:
        columns["source_text"] = record.text
    return columns


def reject(record: Union[Caption, Pair], stage: Stage, reason: enum.Enum) -> Rejected:
    """The rejected row for ``record``: every column it knows, the stage and the reason."""
    return Rejected(**_known_columns(record), stage=stage.value, reason=reason.value)


def fail(record: Union[Caption, Pair], stage: Stage, reason: enum.Enum, error: str) -> Failed:
    """The failed row for ``record``: every column it knows, the stage, error kind and text."""
    return Failed(**_known_columns(record), stage=stage.value, reason=reason.value, error=error)


for _record_type in (Caption, Pair, Rejected, Failed, MemoryEntry):
    beam.coders.registry.register_coder(_record_type, beam.coders.RowCoder)
