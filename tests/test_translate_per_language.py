"""A provider per language (``translation.providers``): one run with German through the tiny
CTranslate2 model (tests/tiny_translation_model.py) and French through the AWS Translate
stand-in (tests/fake_translate.py), both real, on loopback. The runs are shared by the module:
a dry run, a run capped at exactly French's characters, a rerun, and a run with a new German
model."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from polycap.pipeline import cli, config
from polycap.transforms.errors import ConfigError
from polycap.transforms.providers.ctranslate2 import Ctranslate2Config, model_digests
from polycap.transforms.store import read_store_rows
from tests.conftest import MULTI30K, ROOT, SAMPLES
from tests.fake_translate import FakeTranslate

DEMO = str(ROOT / "configs" / "demo.yaml")
INPUTS = json.dumps(
    [
        {"format": "multi30k", "path": str(MULTI30K / "val.en")},
        {"format": "gcc", "path": str(SAMPLES / "gcc" / "*.tsv")},
    ]
)
PER_LANGUAGE = 30
DECODING = {"max_decoding_length": 24, "no_repeat_ngram_size": 2}


def _args(output, fake, german_model, *extra) -> list[str]:
    ctranslate2 = json.dumps({"models": {"de": str(german_model)}, "device": "cpu", **DECODING})
    return [
        "--config", DEMO, "--output", str(output),
        "--set", f"inputs={INPUTS}",
        "--set", "translation.memory=[]",
        "--set", "translation.provider=aws",
        "--set", "translation.providers={de: ctranslate2}",
        "--set", f"translation.aws.endpoint_url={fake.endpoint_url}",
        "--set", f"translation.ctranslate2={ctranslate2}",
        "--set", "translation.batch_size=8",
        "--set", f"sample.per_language={PER_LANGUAGE}", "--set", "sample.fill=false",
        *extra,
    ]


def _store(output: Path) -> str:
    return str(output / "translations")


def _german_folder(german_model) -> str:
    return f"ctranslate2-{model_digests(Ctranslate2Config(models={'de': str(german_model)}, **DECODING))['de']}"


def _folders(output: Path) -> dict[str, list[tuple]]:
    """Store folder -> its rows' (target language, source text), sorted."""
    return {
        folder.name: sorted((row["target_lang"], row["source_text"])
                            for row in read_store_rows(_store(output), folder.name))
        for folder in sorted(Path(_store(output)).iterdir())
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, model, other_model):
    """The dry run, the capped first run, the rerun and the run with a new German model, with
    the store and the stand-in's counts after each."""
    english = (MULTI30K / "val.en").read_text(encoding="utf-8").splitlines()
    french = (MULTI30K / "val.fr").read_text(encoding="utf-8").splitlines()
    output = tmp_path_factory.mktemp("per-language")
    with pytest.MonkeyPatch.context() as env, FakeTranslate(
        {("fr", en.strip()): fr for en, fr in zip(english, french)}
    ) as fake:
        # Fake credentials for boto3's default chain; the stand-in never checks them.
        env.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFORTESTS")
        env.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-for-tests-0123456789")
        env.delenv("AWS_PROFILE", raising=False)
        estimate = cli.dry_run(_args(output, fake, model))
        # Exactly French's characters: a German text that took any of the cap would leave a
        # French one over budget.
        cap = estimate["languages"]["fr"]["characters_to_bill"]
        capped = ["--set", f"translation.max_characters={cap}"]
        first = cli.run(_args(output, fake, model, *capped))
        after_first = SimpleNamespace(folders=_folders(output), requests=fake.requests,
                                      billed=fake.billed_characters)
        again = cli.run(_args(output, fake, model, *capped))
        after_again = SimpleNamespace(folders=_folders(output), requests=fake.requests)
        new_german = cli.run(_args(output, fake, other_model, *capped))
        after_new_german = SimpleNamespace(folders=_folders(output), requests=fake.requests)
    return SimpleNamespace(
        output=output, estimate=estimate, cap=cap, first=first, after_first=after_first,
        again=again, after_again=after_again, new_german=new_german,
        after_new_german=after_new_german,
    )


def test_the_dry_run_shows_each_languages_provider_and_bills_only_the_paid_one(runs):
    german, french = runs.estimate["languages"]["de"], runs.estimate["languages"]["fr"]
    assert (german["provider"], french["provider"]) == ("ctranslate2", "aws")
    assert german["to_translate"] > 0 and german["characters_to_bill"] == 0
    assert german["estimated_cost"] == 0
    assert french["to_translate"] > 0 and french["characters_to_bill"] == french["miss_characters"] > 0
    assert french["estimated_cost"] == round(runs.cap * 15 / 1e6, 4)  # AWS's list price


def test_every_caption_ends_in_one_outcome_and_the_audit_checks_hold(runs):
    for audit in (runs.first, runs.again, runs.new_german):
        assert audit["ok"], audit["checks"]
        for lang in ("de", "fr"):
            numbers = audit["languages"][lang]
            assert numbers["sampled"] == PER_LANGUAGE
            assert numbers["sampled"] == numbers["accepted"] + numbers["rejected"] + numbers["failed"]
            assert numbers["failed"] == 0  # nothing over budget: the German texts took none of the cap


def test_each_provider_stores_only_its_languages_and_only_the_paid_language_is_billed(runs, model):
    folders = runs.after_first.folders
    assert sorted(folders) == ["aws", _german_folder(model)]
    assert {lang for lang, _ in folders["aws"]} == {"fr"}
    assert {lang for lang, _ in folders[_german_folder(model)]} == {"de"}
    for rows in folders.values():  # each text stored once
        assert len(rows) == len(set(rows))
    # Claims sit beside each provider's translations: a text is claimed per provider.
    for folder in folders:
        assert list((Path(_store(runs.output)) / folder / "claims").glob("*.json"))

    translation = runs.first["translation"]
    german, french = translation["languages"]["de"], translation["languages"]["fr"]
    assert (german["provider"], french["provider"]) == ("ctranslate2", "aws")
    assert german["provider_calls"] == len(folders[_german_folder(model)])
    assert german["characters_billed"] == 0 and german["estimated_cost_usd"] == 0
    assert french["characters_billed"] == runs.after_first.billed == runs.cap
    bills = translation["by_provider"]
    assert bills["ctranslate2"] == {"usd_per_million_characters": 0.0, "languages": ["de"],
                                    "characters_billed": 0, "estimated_cost_usd": 0.0}
    assert bills["aws"]["languages"] == ["fr"] and bills["aws"]["characters_billed"] == runs.cap
    assert translation["budget"]["spent"] == runs.cap and translation["budget"]["left"] == 0
    assert set(translation["pairs_by_provider"]) <= {"aws", "ctranslate2"}
    assert (runs.output / "audit" / "audit.html").read_text(encoding="utf-8").count("Bill by provider") == 1


def test_a_rerun_translates_nothing(runs):
    assert runs.after_again.folders == runs.after_first.folders
    assert runs.after_again.requests == runs.after_first.requests
    totals = runs.again["translation"]["totals"]
    assert totals["provider_calls"] == 0 and totals["characters_billed"] == 0
    assert totals["store_hits"] == sum(map(len, runs.after_first.folders.values()))


def test_a_new_german_model_translates_german_again_and_nothing_else(runs, model, other_model):
    before, after = runs.after_again.folders, runs.after_new_german.folders
    assert after[_german_folder(model)] == before[_german_folder(model)]
    assert after["aws"] == before["aws"]
    assert after[_german_folder(other_model)] == before[_german_folder(model)]  # the same texts, again
    assert runs.after_new_german.requests == runs.after_again.requests  # French: no AWS call
    languages = runs.new_german["translation"]["languages"]
    assert languages["de"]["provider_calls"] == len(before[_german_folder(model)])
    assert languages["fr"]["provider_calls"] == 0
    assert languages["fr"]["store_hits"] == len(before["aws"])


MINIMAL = {
    "languages": ["de", "fr"],
    "inputs": [{"format": "coco", "path": "data/samples/coco/*.json"}],
    "sample": {"per_language": 10},
    "keep": {"min_similarity": 0.5},
}


@pytest.mark.parametrize(
    "providers, message",
    [
        ({"it": "aws"}, r"^translation.providers.it: not one of languages \(de, fr\)$"),
        ({"de": "deepl"}, r"^translation.providers.de: Input should be 'none', 'aws', "),
    ],
)
def test_a_bad_provider_per_language_is_one_line_naming_the_key(providers, message):
    with pytest.raises(ConfigError, match=message):
        config.from_dict({**MINIMAL, "translation": {"provider": "aws", "providers": providers}})


def test_a_language_whose_local_model_is_missing_stops_before_running(tmp_path, model):
    base = ["--config", DEMO, "--output", str(tmp_path), "--set", "translation.providers={fr: ctranslate2}"]
    with pytest.raises(ConfigError, match=r"^translation.ctranslate2: required where a language's provider is ctranslate2"):
        cli.run(base)
    only_german = json.dumps({"models": {"de": str(model)}})
    with pytest.raises(ConfigError, match=r"^translation.ctranslate2.models: no model for fr$"):
        cli.run([*base, "--set", f"translation.ctranslate2={only_german}"])
    assert not (tmp_path / "audit").exists()
