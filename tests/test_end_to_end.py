"""The whole pipeline on the bundled samples, checked from the Parquet files themselves."""

import json
import subprocess
import sys

import pyarrow.dataset as ds
import pytest

from polycap.pipeline import cli
from tests.conftest import ROOT, SAMPLES

DEMO = str(ROOT / "configs" / "demo.yaml")
PER_LANGUAGE = 150


def _rows(path):
    return ds.dataset(str(path), format="parquet", partitioning="hive").to_table().to_pylist()


def _input_records():
    """Captions in the demo's input files, counted without polycap's readers."""
    gcc = sum(1 for path in SAMPLES.glob("gcc/*.tsv") for _ in path.open(encoding="utf-8"))
    coco = sum(len(json.loads(p.read_text())["annotations"]) for p in SAMPLES.glob("coco/*.json"))
    vizwiz = sum(len(json.loads(p.read_text())["annotations"]) for p in SAMPLES.glob("vizwiz/*.json"))
    multi30k = sum(1 for path in SAMPLES.glob("parallel/multi30k/*.en") for _ in path.open(encoding="utf-8"))
    return gcc + coco + vizwiz + multi30k


def _run(output, *extra):
    return cli.run(
        ["--config", DEMO, "--output", str(output), "--set", f"sample.per_language={PER_LANGUAGE}", "--set", "sample.fill=false", *extra]
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    return output, _run(output)


def test_every_caption_read_is_accounted_for_in_the_files(demo_run):
    output, audit = demo_run
    accepted = _rows(output / "accepted")
    rejected = _rows(output / "rejected")
    failed = _rows(output / "failed")

    early = [r for r in rejected + failed if r["target_lang"] is None]
    eligible = audit["input"]["eligible"]
    assert audit["input"]["read"] == _input_records()
    assert len(early) + eligible == _input_records()
    assert {r["stage"] for r in early} <= {"read", "clean", "deduplicate", "propn"}
    assert {r["reason"] for r in rejected if r["stage"] == "read"} == {"precanned", "rejected_by_annotators"}

    for lang in ("de", "fr"):
        rows = [r for r in accepted + rejected + failed if r["target_lang"] == lang]
        ids = [r["caption_id"] for r in rows]
        assert len(ids) == len(set(ids)) == min(PER_LANGUAGE, eligible)
        numbers = audit["languages"][lang]
        assert numbers["sampled"] == len(rows)
        assert numbers["accepted"] == sum(r["target_lang"] == lang for r in accepted) > 0
        assert numbers["rejected"] + numbers["failed"] + numbers["accepted"] == len(rows)
        assert all(r["similarity"] >= 0.5 for r in accepted if r["target_lang"] == lang)
    assert audit["ok"], audit["checks"]


def test_accepted_rows_are_real_human_translations(demo_run):
    output, _ = demo_run
    accepted = _rows(output / "accepted")
    assert {r["provider"] for r in accepted} == {"memory"}
    assert {r["lang"] for r in accepted} == {"de", "fr"}
    assert all(r["lang"] == r["target_lang"] for r in accepted)
    memory = {}
    for lang in ("de", "fr"):
        for english_path in SAMPLES.glob("parallel/multi30k/*.en"):
            english = english_path.read_text(encoding="utf-8").splitlines()
            foreign = english_path.with_suffix(f".{lang}").read_text(encoding="utf-8").splitlines()
            memory.update({(lang, e.strip()): f for e, f in zip(english, foreign)})
    found = [memory.get((r["target_lang"], r["source_text"])) for r in accepted]
    assert sum(f == r["translated_text"] for f, r in zip(found, accepted)) >= 0.9 * len(accepted)


def test_audit_files_match_the_returned_audit(demo_run):
    output, audit = demo_run
    assert json.loads((output / "audit" / "audit.json").read_text()) == json.loads(json.dumps(audit))
    page = (output / "audit" / "audit.html").read_text()
    read = audit["input"]["read"]
    assert f"{read:,}" in page or str(read) in page


def test_two_worker_processes_accept_the_same_set(demo_run, tmp_path):
    output, _ = demo_run
    _run(tmp_path, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    key = lambda rows: sorted((r["target_lang"], r["caption_id"], r["translated_text"]) for r in rows)
    assert key(_rows(tmp_path / "accepted")) == key(_rows(output / "accepted"))


def test_tagging_only_what_sampling_can_choose_changes_no_outcome(demo_run, tmp_path):
    output, audit = demo_run
    assert 0 < audit["input"]["untagged"] < audit["input"]["eligible"]
    every = _run(tmp_path, "--set", "sample.preselect_margin=null")
    assert every["input"]["untagged"] == 0
    assert every["input"]["eligible"] == audit["input"]["eligible"]
    assert every["ok"], every["checks"]
    key = lambda rows: sorted(
        (r["target_lang"] or "", r["caption_id"], r.get("stage") or "", r.get("reason") or "") for r in rows
    )
    for outcome in ("accepted", "rejected", "failed"):
        assert key(_rows(tmp_path / outcome)) == key(_rows(output / outcome))


def test_audit_command_recomputes_the_same_numbers(demo_run):
    output, audit = demo_run
    (output / "audit" / "audit.json").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "polycap.pipeline.command", "audit", str(output)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((output / "audit" / "audit.json").read_text())["input"] == audit["input"]


def _polycap(*args):
    return subprocess.run([sys.executable, "-m", "polycap.pipeline.command", *args], capture_output=True, text=True)


def test_the_command_line_runs_and_says_where_the_report_is(tmp_path):
    done = _polycap(
        "run", "--config", DEMO, "--output", str(tmp_path),
        "--set", f"inputs=[{{format: multi30k, path: {SAMPLES}/parallel/multi30k/val.en}}]",
        "--set", "sample.per_language=30", "--set", "sample.fill=false",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"report: {tmp_path}/audit/audit.html"
    assert "de: sampled 30 -> accepted" in done.stdout
    # None of Beam's INFO lines a local run has no use for (one per string type hint, ...).
    assert "Converting string literal type hint" not in done.stderr
    assert "BatchElements statistics" not in done.stderr


def test_missing_input_is_one_line_naming_the_key(tmp_path):
    done = _polycap("run", "--config", DEMO, "--output", str(tmp_path), "--set", "inputs.0.path=nowhere/*.tsv")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "polycap: inputs[0].path: no file matches 'nowhere/*.tsv'"
    assert not (tmp_path / "accepted").exists()


def test_language_the_scorer_does_not_cover_is_refused_before_running(tmp_path):
    done = _polycap("run", "--config", DEMO, "--output", str(tmp_path), "--set", "languages=[de, cs]")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("polycap: score") and "cs" in last


@pytest.fixture(scope="module")
def cut_coco(tmp_path_factory):
    """The demo's COCO file cut in the middle of its annotations, as an interrupted copy leaves it."""
    folder = tmp_path_factory.mktemp("cut-coco")
    whole = next((SAMPLES / "coco").glob("*.json")).read_bytes()
    (folder / "captions.json").write_bytes(whole[: int(len(whole) * 0.8)])
    return folder / "captions.json"


def test_an_unreadable_input_file_ends_the_run_non_zero_naming_it(tmp_path, cut_coco):
    done = _polycap(
        "run", "--config", DEMO, "--output", str(tmp_path),
        "--set", f"inputs=[{{format: coco, path: {cut_coco}}}]", "--set", "sample.per_language=20", "--set", "sample.fill=false",
    )
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("polycap: 1 input file could not be read to its end") and str(cut_coco) in last
    # What was read before the break is in the dataset, and the file is a failed row.
    assert "de: sampled 20 -> accepted" in done.stdout
    failed = ds.dataset(str(tmp_path / "failed"), format="parquet").to_table().to_pylist()
    assert [(row["caption_id"], row["reason"]) for row in failed if row["stage"] == "read"] == [
        (f"file:{cut_coco}", "unreadable_file")
    ]


def test_a_config_can_accept_unreadable_files(tmp_path, cut_coco):
    done = _polycap(
        "run", "--config", DEMO, "--output", str(tmp_path),
        "--set", f"inputs=[{{format: coco, path: {cut_coco}}}]", "--set", "sample.per_language=20", "--set", "sample.fill=false",
        "--set", "read.unreadable_files=record",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 input file could not be read to its end" in done.stdout


def test_memory_share_sets_each_language_threshold_and_the_audit_says_where_from(tmp_path):
    audit = _run(tmp_path, "--set", "keep.memory_share=0.9", "--set", "keep.min_similarity=0.3")
    thresholds = json.loads((tmp_path / "audit" / "counts.json").read_text())["thresholds"]
    assert set(thresholds) == {"de", "fr"}  # the demo's memory is Multi30k's de and fr
    for lang, numbers in audit["languages"].items():
        raised = thresholds[lang]
        assert raised["min_similarity"] > 0.3 and raised["human_pairs"] > 100
        assert numbers["threshold"] == raised["min_similarity"]
        assert numbers["threshold_from"] == {"memory": raised["human_pairs"], "share": 0.9}
        memory = [r for r in _rows(tmp_path / "accepted") + _rows(tmp_path / "rejected")
                  if r["target_lang"] == lang and r["provider"] == "memory"
                  and r.get("reason") in (None, "low_similarity")]
        kept = sum(r.get("reason") is None for r in memory)
        assert kept == -(-9 * len(memory) // 10)  # ceil(0.9 m)
    assert audit["ok"], audit["checks"]
    assert "keeps 90% of the memory" in (tmp_path / "audit" / "audit.html").read_text()


def test_quota_fill_with_margin_scoring_decides_on_the_margin(tmp_path):
    # score.margin with quota fill: every round scores against round 1's reference, keep
    # decides on the margin, and the output and the audit say so.
    audit = cli.run(["--config", DEMO, "--output", str(tmp_path), "--set", "sample.per_language=60",
                     "--set", "score.margin=true", "--set", "score.margin_reference_pairs=60",
                     "--set", "keep.min_similarity=2.0"])
    assert audit["ok"], audit["checks"]
    assert audit["keep_rule"] == {"min_similarity": 2.0, "score": "margin"}
    accepted, rejected = _rows(tmp_path / "accepted"), _rows(tmp_path / "rejected")
    for lang in ("de", "fr"):
        fill = audit["fill"][lang]
        assert fill["accepted"] + fill["short_by"] == 60, fill
        assert fill["accepted"] == sum(r["target_lang"] == lang for r in accepted) > 40
    assert all(r["margin"] >= 2.0 and -1 <= r["similarity"] <= 1 for r in accepted)
    low = [r for r in rejected if r["reason"] == "low_similarity"]
    assert low and all(r["margin"] < 2.0 for r in low)
    assert audit["languages"]["de"]["similarity_quantiles"]["p50"] > 2.0  # the margins'
