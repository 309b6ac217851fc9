"""Google Translate through googletrans 4.x (asynchronous, over httpx).

googletrans' default ``raise_exception=False`` returns the *source text* as the translation on
any HTTP error (a 429 would then score ~1.0 and be accepted), so polycap sets it to True and
retries 429, 5xx and connection errors itself with exponential back-off. One event loop (on its
own thread) and one ``Translator`` per worker, opened in ``__enter__``; every batch sent from any
thread runs on that loop under one semaphore of ``max_concurrency``. An answer equal to the source, or that an offline language identifier
(lingua, over the source and target languages) reads as the source language, is marked
``untranslated``: short captions can fool an identifier, so it only ever rejects, never accepts.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Optional, Sequence

from pydantic import Field

from polycap.transforms.languages import base_language
from polycap.transforms.providers.base import Answer, ErrorKind, Provider, Request
from polycap.transforms.section import Section
from polycap.transforms.text import is_untranslated

_STATUS = re.compile(r'status code "(\d{3})"')
# Our codes -> googletrans' where they differ.
_GOOGLE_CODES = {"zh": "zh-cn", "zh-CN": "zh-cn", "zh-TW": "zh-tw", "he": "iw"}


class GoogleConfig(Section):
    """``translation.google``: Google Translate through googletrans."""

    service_urls: tuple[str, ...] = Field(default=("translate.googleapis.com",), min_length=1)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_seconds: float = Field(default=1.0, ge=0)


def google_language(code: str) -> str:
    return _GOOGLE_CODES.get(code, base_language(code).lower())


def _retryable(error: Exception) -> bool:
    import httpx

    if isinstance(error, httpx.TransportError):
        return True
    status = _STATUS.search(str(error))
    return bool(status) and (status.group(1) == "429" or status.group(1).startswith("5"))


class GoogleTranslate(Provider):
    name = "google"

    def __init__(self, cfg: GoogleConfig):
        self._cfg = cfg
        self.max_concurrency = cfg.max_concurrency

    def __enter__(self) -> "GoogleTranslate":
        from googletrans import Translator

        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="google-translate", daemon=True
        )
        self._loop_thread.start()
        self._translator = Translator(service_urls=list(self._cfg.service_urls), raise_exception=True)
        # Bound to the loop on first use (Python >= 3.10), shared by every batch.
        self._semaphore = asyncio.Semaphore(self._cfg.max_concurrency)
        self._detectors: dict = {}
        return self

    def __exit__(self, *exc_info) -> None:
        self._on_loop(self._translator.client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join()
        self._loop.close()

    def _on_loop(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def translate(self, requests: Sequence[Request]) -> list[Answer]:
        return self._on_loop(self._translate_all(requests))

    async def _translate_all(self, requests: Sequence[Request]) -> list[Answer]:
        return list(await asyncio.gather(*(self._translate_one(request) for request in requests)))

    async def _translate_one(self, request: Request) -> Answer:
        attempt = 0
        async with self._semaphore:
            while True:
                attempt += 1
                try:
                    answer = await self._translator.translate(
                        request.text, src=google_language(request.source_lang),
                        dest=google_language(request.target_lang),
                    )
                except ValueError as error:  # googletrans: unknown language
                    return Answer(error_kind=ErrorKind.REFUSED, error=f"google: {error}")
                except Exception as error:  # googletrans raises a bare Exception with the status
                    if _retryable(error) and attempt < self._cfg.max_attempts:
                        await asyncio.sleep(self._cfg.backoff_seconds * 2 ** (attempt - 1))
                        continue
                    kind = ErrorKind.UNAVAILABLE if _retryable(error) else ErrorKind.REFUSED
                    return Answer(error_kind=kind, error=f"google after {attempt} attempts: {error}")
                return Answer(
                    translation=answer.text,
                    untranslated=self._untranslated(request, answer.text),
                )

    def _untranslated(self, request: Request, translation: str) -> bool:
        if is_untranslated(request.text, translation):
            return True
        detected = self._detector(request.source_lang, request.target_lang)
        if detected is None:
            return False
        detector, source = detected
        return detector.detect_language_of(translation) == source

    def _detector(self, source_lang: str, target_lang: str) -> Optional[tuple]:
        """A lingua detector over the two languages (built once per pair), or None where lingua
        does not know one of them."""
        key = (source_lang, target_lang)
        if key not in self._detectors:
            from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

            try:
                codes = [IsoCode639_1.from_str(base_language(code)) for code in key]
            except ValueError:
                self._detectors[key] = None
            else:
                detector = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()
                self._detectors[key] = (detector, Language.from_iso_code_639_1(codes[0]))
        return self._detectors[key]
