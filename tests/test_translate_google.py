"""The Google provider: the real googletrans client, its httpx calls answered by respx."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import respx

from polycap.transforms.providers.google import GoogleConfig
from polycap.transforms.providers.base import ErrorKind, Request
from polycap.transforms.providers.google import GoogleTranslate

URL = "https://translate.googleapis.com/translate_a/single"


def _answer(translation: str, source: str) -> httpx.Response:
    return httpx.Response(200, text=json.dumps([[[translation, source, None, None, 10]], None, "en"]))


class _SlowGoogle:
    """A respx side effect for googletrans' async client: answers (target language, text) from
    ``answers`` after 20 ms and records the most requests it held at once."""

    def __init__(self, answers: dict[tuple[str, str], str]):
        self.answers = answers
        self.in_flight = 0
        self.most = 0

    async def __call__(self, request):
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.02)
        self.in_flight -= 1
        text = request.url.params["q"]
        return _answer(self.answers[(request.url.params["tl"], text)], text)


@pytest.fixture
def translations(multi30k_val):
    return {english.strip(): german for english, german in zip(multi30k_val["en"][:20], multi30k_val["de"][:20])}


def _provider(**settings):
    return GoogleTranslate(GoogleConfig(backoff_seconds=0.01, **settings))


@respx.mock
def test_429_and_5xx_are_backed_off_and_retried(translations):
    calls = {"count": 0}

    def answer(request):
        calls["count"] += 1
        if calls["count"] <= 2:
            return httpx.Response(429)
        if calls["count"] == 3:
            return httpx.Response(503)
        text = request.url.params["q"]
        return _answer(translations[text], text)

    respx.get(URL).mock(side_effect=answer)
    english = list(translations)[:5]
    with _provider(max_concurrency=1, max_attempts=5) as provider:
        outcomes = provider.translate([Request("en", "de", text) for text in english])
    assert [o.translation for o in outcomes] == [translations[text] for text in english]
    assert not any(o.untranslated for o in outcomes)
    assert calls["count"] == 8


@respx.mock
def test_batches_from_several_threads_share_one_concurrency_limit(translations):
    server = _SlowGoogle({("de", english): german for english, german in translations.items()})
    respx.get(URL).mock(side_effect=server)
    english = list(translations)[:12]
    batches = [english[start : start + 4] for start in range(0, 12, 4)]
    with _provider(max_concurrency=2) as provider, ThreadPoolExecutor(3) as senders:
        results = list(senders.map(lambda batch: provider.translate([Request("en", "de", t) for t in batch]), batches))
    assert [[o.translation for o in outcomes] for outcomes in results] == [
        [translations[text] for text in batch] for batch in batches
    ]
    assert server.most == 2


@respx.mock
def test_exhausted_retries_fail_instead_of_returning_the_source():
    respx.get(URL).mock(return_value=httpx.Response(429))
    with _provider(max_attempts=3) as provider:
        (outcome,) = provider.translate([Request("en", "de", "A dog runs on the beach.")])
    assert outcome.translation is None
    assert outcome.error_kind is ErrorKind.UNAVAILABLE and "429" in outcome.error
    assert respx.calls.call_count == 3


@respx.mock
def test_echoed_or_wrong_language_answers_are_untranslated(multi30k_val):
    english, french = multi30k_val["en"][1], multi30k_val["fr"][1]
    answers = {english: english, multi30k_val["en"][2]: french}
    respx.get(URL).mock(side_effect=lambda request: _answer(answers[request.url.params["q"]], request.url.params["q"]))
    with _provider() as provider:
        echoed, wrong = provider.translate(
            [Request("en", "de", english), Request("en", "fr", multi30k_val["en"][2])]
        )
    assert echoed.untranslated
    assert not wrong.untranslated  # French asked, French given
    respx.get(URL).mock(side_effect=lambda request: _answer(multi30k_val["en"][3], request.url.params["q"]))
    with _provider() as provider:
        (english_answer,) = provider.translate([Request("en", "de", multi30k_val["en"][4])])
    assert english_answer.untranslated  # an English answer to an English-to-German request


@respx.mock
def test_unknown_language_is_refused():
    with _provider() as provider:
        (outcome,) = provider.translate([Request("en", "xx", "A dog runs.")])
    assert outcome.error_kind is ErrorKind.REFUSED
    assert respx.calls.call_count == 0


@respx.mock
def test_a_run_through_google_overlaps_batches_under_one_limit(tmp_path, multi30k_val):
    from polycap.pipeline import cli
    from tests.conftest import MULTI30K, ROOT

    answers = {
        (lang, english.strip()): foreign
        for lang in ("de", "fr")
        for english, foreign in zip(multi30k_val["en"], multi30k_val[lang])
    }
    server = _SlowGoogle(answers)
    respx.get(URL).mock(side_effect=server)
    inputs = json.dumps([{"format": "multi30k", "path": str(MULTI30K / "val.en")}])
    audit = cli.run(
        ["--config", str(ROOT / "configs" / "demo.yaml"), "--output", str(tmp_path),
         "--set", f"inputs={inputs}", "--set", "translation.memory=[]",
         "--set", "translation.provider=google", "--set", "translation.batch_size=1",
         "--set", "translation.google.max_concurrency=3", "--set", "sample.per_language=20", "--set", "sample.fill=false"]
    )
    assert audit["ok"], audit["checks"]
    # batches of one text: only overlapping batches can hold three requests at once
    assert server.most == 3
    assert respx.calls.call_count == 40
    for lang in ("de", "fr"):
        assert audit["languages"][lang]["failed"] == 0
        assert audit["languages"][lang]["accepted"] >= 15
