"""The AWS provider and the translation store, with the real boto3 client against a local
server that speaks AWS Translate's protocol."""

import json
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from polycap.pipeline import cli
from polycap.transforms.providers.aws import AwsConfig
from polycap.transforms.translate import TranslateCaptions, TranslationConfig
from tests.conftest import MULTI30K, ROOT, SAMPLES, local_pipeline, pair
from tests.fake_translate import FakeTranslate
from tests.test_scale import BUCKET, _s3_client, _s3_options, s3_endpoint  # noqa: F401 (fixture)
from polycap.transforms.providers.aws import AwsTranslate
from polycap.transforms.providers.base import ErrorKind, Request
from polycap.transforms.store import read_store_rows

DEMO = str(ROOT / "configs" / "demo.yaml")
INPUTS = json.dumps(
    [
        {"format": "multi30k", "path": str(MULTI30K / "val.en")},
        {"format": "gcc", "path": str(SAMPLES / "gcc" / "*.tsv")},
    ]
)


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    # Fake credentials for boto3's default chain; the fake server never checks them.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFORTESTS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-for-tests-0123456789")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def translations(multi30k_val):
    return {
        (lang, english.strip()): foreign
        for lang in ("de", "fr")
        for english, foreign in zip(multi30k_val["en"], multi30k_val[lang])
    }


def _aws(fake, **settings):
    return AwsConfig(endpoint_url=fake.endpoint_url, max_concurrency=4, **settings)


def test_throttling_is_retried_and_refusals_are_outcomes(translations, multi30k_val):
    requests = [Request("en", "de", multi30k_val["en"][n].strip()) for n in range(3)]
    with FakeTranslate(translations) as fake:
        fake.throttle_first = 3
        with AwsTranslate(_aws(fake, max_attempts=5)) as provider:
            outcomes = provider.translate(requests)
        assert [o.translation for o in outcomes] == [multi30k_val["de"][n] for n in range(3)]
        assert fake.requests == 6 and fake.billed_characters == sum(len(r.text) for r in requests)

        fake.refuse = {"fr"}
        with AwsTranslate(_aws(fake)) as provider:
            (refused,) = provider.translate([Request("en", "fr", "A dog runs.")])
        assert refused.error_kind is ErrorKind.REFUSED and "UnsupportedLanguagePair" in refused.error


def test_a_shouting_caption_is_sent_in_sentence_case_and_the_store_says_so(tmp_path):
    shouting = "LOTS OF BROKEN TOILETS SITTING OUT ON A LAWN"  # bundled COCO, annotation 464194
    sent = "Lots of broken toilets sitting out on a lawn"
    translated = "Viele kaputte Toiletten stehen auf einem Rasen"
    calm = "A dog runs on the beach."
    with FakeTranslate({("de", sent): translated, ("de", calm): "Ein Hund rennt am Strand."}) as fake:
        cfg = TranslationConfig(provider="aws", aws=_aws(fake))
        with local_pipeline() as pipeline:
            pairs = [pair("coco:464194", shouting, "de"), pair("coco:1", calm, "de")]
            out = pipeline | "Pairs" >> beam.Create(pairs) | TranslateCaptions(
                cfg, pipeline | "NoMemory" >> beam.Create([]), store_root=str(tmp_path), run_id="test",
                languages=("de",),
            )
            assert_that(
                out.kept | beam.Map(lambda p: (p.source_text, p.sent_text, p.translated_text)),
                # the output keeps the caption as read, and says what was sent where it differs
                equal_to([(shouting, sent, translated), (calm, None, "Ein Hund rennt am Strand.")]),
            )
        assert sorted(fake.answered) == [("de", calm), ("de", sent)]
    row = next(row for row in read_store_rows(str(tmp_path), "aws") if row["source_text"] != calm)
    assert (row["source_text"], row["characters"]) == (sent, len(shouting))


def test_exhausted_retries_are_unavailable_not_raised():
    with FakeTranslate({}) as fake:
        fake.throttle_first = 1000
        with AwsTranslate(_aws(fake, max_attempts=2)) as provider:
            (outcome,) = provider.translate([Request("en", "de", "A dog runs on the beach.")])
    assert outcome.translation is None and outcome.error_kind is ErrorKind.UNAVAILABLE
    assert fake.requests == 2


def _run(output, fake, *extra):
    return cli.run(
        [
            "--config", DEMO, "--output", str(output),
            "--set", f"inputs={INPUTS}",
            "--set", "translation.memory=[]",
            "--set", "translation.provider=aws",
            "--set", f"translation.aws.endpoint_url={fake.endpoint_url}",
            "--set", "translation.aws.max_attempts=6",
            "--set", "translation.batch_size=16",
            "--set", "sample.per_language=40", "--set", "sample.fill=false",
            *extra,
        ]
    )


def _distinct_characters(output):
    rows = [row for row in read_store_rows(str(output / "translations"), "aws")]
    return sum(row["characters"] for row in rows), len(rows)


def test_each_distinct_text_is_paid_once_under_faults_and_never_again(tmp_path, translations):
    with FakeTranslate(translations) as fake:
        fake.throttle_first, fake.fail_every = 5, 7
        estimate = cli.dry_run(
            ["--config", DEMO, "--output", str(tmp_path), "--set", f"inputs={INPUTS}",
             "--set", "translation.memory=[]", "--set", "translation.provider=aws",
             "--set", "sample.per_language=40", "--set", "sample.fill=false"]
        )
        assert fake.requests == 0  # a dry run calls nobody
        audit = _run(tmp_path, fake)
        billed_first = fake.billed_characters
        assert audit["ok"], audit["checks"]
        for lang in ("de", "fr"):
            numbers = audit["languages"][lang]
            assert numbers["sampled"] == 40 == numbers["accepted"] + numbers["rejected"] + numbers["failed"]
            assert numbers["failed"] == 0  # every injected fault was retried
            assert numbers["accepted"] > 20
        estimated = sum(lang["characters_to_bill"] for lang in estimate["languages"].values())
        assert billed_first == estimated == _distinct_characters(tmp_path)[0]
        assert audit["translation"]["totals"]["characters_billed"] == billed_first
        assert len(fake.answered) == len(set(fake.answered)) == 80

        again = _run(tmp_path, fake)
        assert fake.billed_characters == billed_first  # the rerun billed nothing
        assert again["translation"]["totals"]["characters_billed"] == 0
        assert again["translation"]["totals"]["store_hits"] == 80
        assert again["languages"]["de"]["accepted"] == audit["languages"]["de"]["accepted"]


def test_a_rerun_pays_only_for_what_the_first_run_did_not_finish(tmp_path, translations):
    with FakeTranslate(translations) as fake:
        fake.refuse = {"fr"}  # the first run gets French refused: those rows fail
        first = _run(tmp_path, fake)
        assert first["languages"]["fr"]["failed"] == 40
        assert first["languages"]["fr"]["failed_by_reason"] == {"provider_refused": 40}
        paid_for_german = fake.billed_characters
        fake.refuse = set()
        second = _run(tmp_path, fake)
        assert second["languages"]["fr"]["failed"] == 0
        assert {lang for lang, _ in fake.answered} == {"de", "fr"}
        assert sum(len(text) for lang, text in fake.answered if lang == "de") == paid_for_german
        assert second["translation"]["languages"]["de"]["characters_billed"] == 0
        assert second["translation"]["languages"]["fr"]["characters_billed"] == fake.billed_characters - paid_for_german
        assert len(fake.answered) == len(set(fake.answered)) == 80


def test_replayed_bundles_do_not_pay_again(tmp_path, translations):
    with FakeTranslate(translations) as fake:
        audit = _run(tmp_path, fake, "--direct_runner_bundle_repeat=1")
        assert audit["ok"]
        assert len(fake.answered) == len(set(fake.answered)) == 80
        assert fake.billed_characters == _distinct_characters(tmp_path)[0]


def test_batches_overlap_up_to_max_concurrency_requests_and_no_more(tmp_path, translations):
    # Batches of one text: sent one batch after another, one request would be in flight.
    with FakeTranslate(translations, latency=0.05) as fake:
        audit = _run(tmp_path, fake, "--set", "translation.aws.max_concurrency=4",
                     "--set", "translation.batch_size=1")
    assert audit["ok"], audit["checks"]
    assert len(fake.answered) == len(set(fake.answered)) == 80
    assert fake.max_in_flight == 4


def test_missing_credentials_are_a_clear_error_before_running(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    from polycap.transforms.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^translation.provider: aws needs credentials"):
        _run(tmp_path, FakeTranslate({}))


def test_client_side_rate_limit_spaces_requests(translations, multi30k_val):
    import time

    requests = [Request("en", "de", multi30k_val["en"][n].strip()) for n in range(9)]
    with FakeTranslate(translations) as fake:
        with AwsTranslate(_aws(fake, requests_per_second=20)) as provider:
            started = time.monotonic()
            outcomes = provider.translate(requests)
            elapsed = time.monotonic() - started
    assert all(o.translation for o in outcomes)
    # nine requests after the first at 20 per second cannot finish in under 0.4 s
    assert elapsed >= 0.4


def _run_command(output, fake, store, *extra):
    return [
        sys.executable, "-m", "polycap.pipeline.command", "run", "--config", DEMO, "--output", str(output),
        "--set", f"inputs={INPUTS}", "--set", "translation.memory=[]",
        "--set", "translation.provider=aws", "--set", f"translation.aws.endpoint_url={fake.endpoint_url}",
        "--set", f"translation.store={store}", "--set", "translation.batch_size=8",
        "--set", "sample.per_language=40", "--set", "sample.fill=false", *extra,
    ]


def test_two_runs_at_once_on_one_store_pay_each_text_once(tmp_path, translations):
    # Both start with an empty store, so both miss every text; their samples overlap (the 40
    # best-ranked captions of each language are among the 60 best), their batches do not. Claims
    # decide who pays for each text; the other reads it from the claimant's batch file.
    store = tmp_path / "store"
    sizes = {"first": 40, "second": 60}
    with FakeTranslate(translations, latency=0.03) as fake:
        runs = [
            subprocess.Popen(
                _run_command(tmp_path / name, fake, store, "--set", f"sample.per_language={size}", "--set", "sample.fill=false"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for name, size in sizes.items()
        ]
        finished = [run.communicate(timeout=900) for run in runs]
    for run, (_, stderr) in zip(runs, finished):
        assert run.returncode == 0, stderr[-3000:]
    assert len(fake.answered) == len(set(fake.answered)) == 2 * 60
    audits = {name: json.loads((tmp_path / name / "audit" / "audit.json").read_text()) for name in sizes}
    # Each run's audit bills what it paid (its own store rows); together, what the provider billed.
    billed = [audit["translation"]["totals"]["characters_billed"] for audit in audits.values()]
    assert sum(billed) == fake.billed_characters
    for name, size in sizes.items():
        assert audits[name]["languages"]["de"]["sampled"] == size and audits[name]["ok"]


def test_a_store_on_s3_claims_and_keeps_what_was_paid(tmp_path, translations, s3_endpoint):  # noqa: F811
    # The claims and batch files of a run on an object store (moto), not only a local disk.
    _s3_client(s3_endpoint).create_bucket(Bucket=f"{BUCKET}-store")
    store = f"s3://{BUCKET}-store/translations"
    with FakeTranslate(translations) as fake:
        first = _run(tmp_path / "first", fake, "--set", f"translation.store={store}",
                     "--set", "sample.per_language=20", "--set", "sample.fill=false", *_s3_options(s3_endpoint))
        paid = fake.billed_characters
        again = _run(tmp_path / "again", fake, "--set", f"translation.store={store}",
                     "--set", "sample.per_language=20", "--set", "sample.fill=false", *_s3_options(s3_endpoint))
    assert first["ok"] and again["ok"]
    assert len(fake.answered) == len(set(fake.answered)) == 40
    assert first["translation"]["totals"]["characters_billed"] == paid > 0
    assert fake.billed_characters == paid and again["translation"]["totals"]["store_hits"] == 40
    keys = [item["Key"] for item in _s3_client(s3_endpoint).list_objects_v2(
        Bucket=f"{BUCKET}-store", Prefix="translations/aws/claims/")["Contents"]]
    assert len(keys) == 40  # one claim per paid text, kept: it says where the translation is
