"""The provider interface: a client that opens once per worker, translates a batch of distinct
texts, and turns every provider error into a per-text answer instead of raising."""

from __future__ import annotations

import abc
import enum
import threading
import time
from typing import NamedTuple, Optional, Sequence


class ErrorKind(str, enum.Enum):
    # retries exhausted on throttling, 5xx or connection errors: a later rerun may succeed
    UNAVAILABLE = "provider_unavailable"
    # the provider refused this text (unsupported pair, language not detected, ...)
    REFUSED = "provider_refused"


class Request(NamedTuple):
    source_lang: str
    target_lang: str
    text: str


class Answer(NamedTuple):
    """A translation, or the kind and text of the error that prevented it. ``untranslated``
    marks a paid answer that is not a translation (the source echoed, or the wrong language):
    it is stored, so nobody pays for it again, and its captions are rejected as untranslated."""

    translation: Optional[str] = None
    error_kind: Optional[ErrorKind] = None
    error: Optional[str] = None
    untranslated: bool = False


class Provider(abc.ABC):
    """Opened in ``__enter__`` (clients, pools, event loops), closed in ``__exit__``; the
    constructor only stores configuration, so a provider pickles cleanly to workers.

    ``translate`` may be called from several threads at once (the translate stage overlaps
    batches); ``max_concurrency`` bounds the requests in flight across all of those calls."""

    name: str
    max_concurrency: int

    def __enter__(self) -> "Provider":
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def store_names(self, target_langs: Sequence[str]) -> dict[str, str]:
        """Target language -> the translation store's folder of this provider's translations
        into it (and of the claims on them): its ``name``, known before opening, unless the
        provider says otherwise (``ctranslate2``: a digest of that language's model files,
        computed where it runs)."""
        return dict.fromkeys(target_langs, self.name)

    @abc.abstractmethod
    def translate(self, requests: Sequence[Request]) -> list[Answer]:
        """One answer per request, in order. Never raises for a provider error."""


class RateLimiter:
    """At most ``per_second`` units a second, shared by the threads of one worker; None = no limit."""

    def __init__(self, per_second: Optional[float]):
        self._rate = per_second
        self._lock = threading.Lock()
        self._next_free = time.monotonic()

    def acquire(self, units: float = 1.0) -> None:
        if self._rate is None:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_free)
            self._next_free = start + units / self._rate
        if start > now:
            time.sleep(start - now)
