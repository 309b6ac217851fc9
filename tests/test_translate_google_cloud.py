"""The Cloud Translation v3 provider with Google's real client (``google-cloud-translate``, REST
transport, anonymous credentials) against a local server that speaks the v3 REST protocol
(tests/fake_cloud_translate.py)."""

import json

import pytest

from polycap.pipeline import cli
from polycap.transforms.errors import ConfigError
from polycap.transforms.providers.base import ErrorKind, Request
from polycap.transforms.providers.google_cloud import (
    MAX_CODE_POINTS, MAX_SEGMENTS, GoogleCloudConfig, GoogleCloudTranslate, check_credentials,
)
from polycap.transforms.store import read_store_rows
from tests.conftest import MULTI30K, ROOT, SAMPLES
from tests.fake_cloud_translate import FakeCloudTranslate

DEMO = str(ROOT / "configs" / "demo.yaml")
INPUTS = json.dumps(
    [
        {"format": "multi30k", "path": str(MULTI30K / "val.en")},
        {"format": "gcc", "path": str(SAMPLES / "gcc" / "*.tsv")},
    ]
)


@pytest.fixture
def translations(multi30k_val):
    return {
        (lang, english.strip()): foreign
        for lang in ("de", "fr")
        for english, foreign in zip(multi30k_val["en"], multi30k_val[lang])
    }


def _settings(fake, **settings) -> dict:
    return dict(api_endpoint=fake.endpoint, transport="rest", credentials="anonymous",
                project="test-project", backoff_seconds=0.01, **settings)


def _provider(fake, **settings):
    return GoogleCloudTranslate(GoogleCloudConfig(**_settings(fake, **settings)))


def test_429_and_503_are_backed_off_and_retried(translations, multi30k_val):
    requests = [Request("en", "de", multi30k_val["en"][n].strip()) for n in range(3)]
    with FakeCloudTranslate(translations) as fake:
        fake.throttle_first, fake.fail_every = 2, 3
        with _provider(fake, max_attempts=5) as provider:
            answers = provider.translate(requests)
    assert [answer.translation for answer in answers] == [multi30k_val["de"][n] for n in range(3)]
    assert fake.requests == 4  # 429, 429, 503, then the answer: one request for the three texts
    assert fake.billed_characters == sum(len(request.text) for request in requests)
    path, body = fake.bodies[-1]
    assert path == "/v3/projects/test-project/locations/global:translateText"
    # Plain text: the API's default, text/html, would escape "&" and drop what looks like a tag.
    assert body["mimeType"] == "text/plain" and body["sourceLanguageCode"] == "en"


def test_exhausted_retries_are_unavailable_not_raised():
    with FakeCloudTranslate({}) as fake:
        fake.throttle_first = 1000
        with _provider(fake, max_attempts=3) as provider:
            (answer,) = provider.translate([Request("en", "de", "A dog runs on the beach.")])
    assert answer.translation is None and answer.error_kind is ErrorKind.UNAVAILABLE
    assert "after 3 attempts" in answer.error and fake.requests == 3


def test_refusals_and_echoed_answers_are_outcomes():
    with FakeCloudTranslate({}) as fake:
        fake.refuse, fake.echo = {"cs"}, {"fr"}
        with _provider(fake) as provider:
            refused, echoed, translated = provider.translate(
                [Request("en", "cs", "A dog."), Request("en", "fr", "A cat."), Request("en", "de", "A cow.")]
            )
    assert refused.error_kind is ErrorKind.REFUSED and "Target language is invalid" in refused.error
    assert echoed.translation == "A cat." and echoed.untranslated
    assert translated.translation == "de: A cow." and not translated.untranslated
    assert fake.requests == 3  # a refusal is not retried; one request per language pair


def test_requests_stay_within_the_documented_limits():
    assert (MAX_SEGMENTS, MAX_CODE_POINTS) == (1024, 30_000)
    texts = [f"A dog number {n} runs on the beach." for n in range(300)]
    with FakeCloudTranslate({}) as fake:
        with _provider(fake, segments_per_request=128, code_points_per_request=2_000) as provider:
            answers = provider.translate(
                [Request("en", "de", text) for text in texts] + [Request("en", "de", "x" * 2_001)]
            )
    *translated, too_long = answers
    assert [answer.translation for answer in translated] == [f"de: {text}" for text in texts]
    assert too_long.error_kind is ErrorKind.REFUSED and "never sent" in too_long.error
    sent = [body["contents"] for _, body in fake.bodies]
    assert sorted(text for contents in sent for text in contents) == sorted(texts)
    assert all(len(contents) <= 128 and sum(map(len, contents)) <= 2_000 for contents in sent)


def test_config_and_credentials_errors_are_one_line(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="credentials: anonymous is for a local stand-in only"):
        GoogleCloudConfig(credentials="anonymous")
    with pytest.raises(ValueError, match="segments_per_request"):
        GoogleCloudConfig(segments_per_request=MAX_SEGMENTS + 1)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=r"^translation.provider: google-cloud needs Application Default Credentials .*missing.json[^\n]*$"):
        check_credentials(GoogleCloudConfig(project="p"))


def _run(output, fake, *extra):
    settings = json.dumps(_settings(fake, max_attempts=6))
    return cli.run(
        [
            "--config", DEMO, "--output", str(output),
            "--set", f"inputs={INPUTS}",
            "--set", "translation.memory=[]",
            "--set", "translation.provider=google-cloud",
            "--set", f"translation.google_cloud={settings}",
            "--set", "translation.batch_size=16",
            "--set", "sample.per_language=40", "--set", "sample.fill=false",
            *extra,
        ]
    )


def test_faults_are_retried_refusals_fail_and_reruns_pay_only_for_what_is_missing(tmp_path, translations):
    with FakeCloudTranslate(translations) as fake:
        fake.throttle_first, fake.fail_every, fake.refuse = 3, 5, {"fr"}
        first = _run(tmp_path, fake, "--direct_runner_bundle_repeat=1")
        assert first["ok"], first["checks"]
        for lang in ("de", "fr"):
            numbers = first["languages"][lang]
            assert numbers["sampled"] == 40 == numbers["accepted"] + numbers["rejected"] + numbers["failed"]
        assert first["languages"]["de"]["failed"] == 0  # every injected fault was retried
        assert first["languages"]["fr"]["failed_by_reason"] == {"provider_refused": 40}
        assert len(fake.answered) == len(set(fake.answered)) == 40  # replayed bundles paid nothing
        assert first["translation"]["totals"]["characters_billed"] == fake.billed_characters
        assert first["translation"]["by_provider"]["google-cloud"]["usd_per_million_characters"] == 20.0

        fake.refuse = set()
        paid_for_german = fake.billed_characters
        second = _run(tmp_path, fake)
        assert second["languages"]["fr"]["failed"] == 0
        assert second["translation"]["languages"]["de"]["characters_billed"] == 0
        assert second["translation"]["languages"]["fr"]["characters_billed"] == fake.billed_characters - paid_for_german
        stored = read_store_rows(str(tmp_path / "translations"), "google-cloud")
        assert fake.billed_characters == sum(row["characters"] for row in stored)

        billed = fake.billed_characters
        third = _run(tmp_path, fake)
        assert fake.billed_characters == billed
        assert third["translation"]["totals"]["store_hits"] == 80
        assert third["translation"]["totals"]["characters_billed"] == 0
    assert len(fake.answered) == len(set(fake.answered)) == 80
