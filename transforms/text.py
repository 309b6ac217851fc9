"""The text rules several stages share: how a caption is normalised, when two texts are "the
same", and when a translation is no translation at all. One definition each, so that
de-duplication, the translation memory, the providers, keep and the audit of a parallel set
can never disagree about them."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Optional

_WHITESPACE = re.compile(r"\s+")
# What match_key drops from the end of a text, with any whitespace (str.isspace, as re's \s).
_FINAL_PUNCTUATION = frozenset(".!?;:,")


# ASCII's control characters that are not whitespace (the whitespace ones become spaces anyway).
_ASCII_CONTROLS = {code: None for code in (*range(0x20), 0x7F) if not chr(code).isspace()}


def normalise(text: str) -> str:
    """NFC, control/format characters dropped (whitespace ones become spaces), spaces collapsed."""
    if text.isascii():  # most captions: NFC changes nothing and the only Cc/Cf are controls
        if text.isprintable():  # no control character, and no whitespace but the space
            return " ".join(text.split())
        return _WHITESPACE.sub(" ", text.translate(_ASCII_CONTROLS)).strip()
    text = unicodedata.normalize("NFC", text)
    text = "".join(
        " " if char.isspace() else char
        for char in text
        if char.isspace() or unicodedata.category(char) not in ("Cc", "Cf")
    )
    return _WHITESPACE.sub(" ", text).strip()


def match_key(text: str) -> str:
    """The key two captions are "the same text" under: normalised, casefolded, without final
    punctuation. De-duplication, the translation memory and the untranslated rule all use it."""
    key = normalise(text).casefold()
    end = len(key)  # a loop from the end: a regex anchored at the end tries every space first
    while end and (key[end - 1] in _FINAL_PUNCTUATION or key[end - 1].isspace()):
        end -= 1
    return key[:end]


def is_untranslated(source: str, translation: Optional[str]) -> bool:
    """True when there is no translation, or it is the source again under ``match_key`` (case,
    spacing and final punctuation ignored): a provider that echoes its input, or a parallel set
    with a copied line. Such a pair scores ~1.0 against itself, so it is judged before any score."""
    if not isinstance(translation, str):
        return True
    return match_key(translation) == match_key(source)


def is_shouting(text: str) -> bool:
    """True when most of the letters of ``text`` that have a case are capitals, over at least
    two words of two letters or more ("A POLICE OFFICER IS SITTING", not "a TV on a NYC bus")."""
    cased = [char for char in text if char.isupper() or char.islower()]
    capitals = sum(char.isupper() for char in cased)
    shouted_words = sum(len(word) >= 2 and word.isupper() for word in text.split())
    return shouted_words >= 2 and capitals > 0.7 * len(cased)


def sent_text(text: str) -> Optional[str]:
    """What the output records as sent to MT for the caption ``text``: ``text_for_mt(text)``
    where it differs from the caption, else None (the caption itself was sent)."""
    sent = text_for_mt(text)
    return None if sent == text else sent


def text_for_mt(text: str) -> str:
    """The text a provider is sent for ``text``: a shouting caption in sentence case (MT engines
    copy the capitalised words they do not recognise: "A POLICE OFFICER IS SITTIGN DOWN" came
    back "UN POLICE OFFICER È SITTIGN DOWN"), any other caption as it is. Only the case changes,
    so ``match_key`` of both is the same and the length in characters too."""
    if not is_shouting(text):
        return text
    lowered = text.lower()
    first = next((i for i, char in enumerate(lowered) if char.isalpha()), None)
    if first is None:
        return lowered
    return lowered[:first] + lowered[first].upper() + lowered[first + 1 :]


def stable_bucket(key: str, buckets: int) -> int:
    """``key``'s bucket among ``buckets``: from a hash of the text alone (never Python's
    ``hash()``, salted per process), so every worker and runner puts it in the same one."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets
