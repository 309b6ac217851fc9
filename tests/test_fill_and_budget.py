"""Quota fill (``sample.fill``) and the spending cap (``translation.max_characters``): what a user
asked for (N accepted pairs per language, at most so many characters billed), checked against a
plain-Python walk down the rank order and against the AWS stand-in's own bill."""

import json
from collections import Counter

import apache_beam as beam
import pyarrow.parquet as pq
import pytest

from polycap.pipeline import cli
from polycap.pipeline.config import load as load_config
from polycap.transforms.budget import funded_counts
from polycap.transforms.clean import CleanCaptions
from polycap.transforms.deduplicate import DropDuplicateCaptions
from polycap.transforms.errors import ConfigError
from polycap.transforms.read import ReadCaptions
from polycap.transforms.sample import image_of, pair_rank, sample_rank
from tests.conftest import MULTI30K, ROOT, local_pipeline
from tests.fake_translate import FakeTranslate
from tests.test_translate_aws import aws_credentials  # noqa: F401 (fixture)

DEMO = str(ROOT / "configs" / "demo.yaml")
N = 150
LANGUAGES = ("de", "fr")


def _rows(output, kind):
    table = pq.read_table(output / kind)
    return table.to_pylist() if table.num_rows else []


def _outcomes(output):
    """{language: {caption_id: outcome}} of every row from sampling on."""
    outcomes = {lang: {} for lang in LANGUAGES}
    for row in _rows(output, "accepted"):
        outcomes[row["target_lang"]][row["caption_id"]] = "accepted"
    for kind in ("rejected", "failed"):
        for row in _rows(output, kind):
            if row["target_lang"] in outcomes:
                outcomes[row["target_lang"]][row["caption_id"]] = row["reason"]
    return outcomes


def _eligible(cfg, output):
    """The captions sampling could choose: read, cleaned, de-duplicated, not PROPN-rejected."""
    with local_pipeline() as pipeline:
        read = pipeline | ReadCaptions(cfg.inputs, cfg.source_lang)
        unique = (read.kept | CleanCaptions(cfg.clean)).kept | DropDuplicateCaptions()
        _ = (
            unique.kept
            | beam.Map(lambda caption: json.dumps([caption.caption_id, image_of(caption)]))
            | beam.io.WriteToText(str(output / "eligible"), shard_name_template="")
        )
    found = [json.loads(line) for line in (output / "eligible").read_text().splitlines()]
    propn = {row["caption_id"] for row in _rows(output, "rejected") if row["stage"] == "propn"}
    return [(caption_id, image) for caption_id, image in found if caption_id not in propn]


def walk_down(eligible, cfg, lang):
    """Quota fill by hand: the language's captions in rank order, at most max_per_image of an
    image; -> that order as caption ids."""
    order, per_image = [], Counter()
    for caption_id, image in sorted(eligible, key=lambda c: sample_rank(cfg.sample.seed, c[0], lang)):
        if cfg.sample.max_per_image is None or per_image[image] < cfg.sample.max_per_image:
            per_image[image] += 1
            order.append(caption_id)
    return order


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """The demo with quota fill (memory only: captions it lacks fail no_translation), run with
    one process and with two; the same config run again."""
    runs = {}
    settings = ["--set", "sample.fill=true", "--set", f"sample.per_language={N}",
                "--set", "sample.preselect_margin=null", "--set", "sample.max_per_image=2"]
    for name, extra in {"one": (), "two": ("--direct_running_mode=multi_processing",
                                           "--direct_num_workers=2")}.items():
        output = tmp_path_factory.mktemp(name)
        audit = cli.run(["--config", DEMO, "--output", str(output), *settings, *extra])
        runs[name] = (output, audit)
    cfg = load_config(DEMO, [setting for setting in settings if setting != "--set"])
    return runs, cfg


def test_fill_accepts_exactly_the_first_n_that_pass_down_the_rank_order(filled):
    runs, cfg = filled
    output, audit = runs["one"]
    assert audit["ok"], audit["checks"]
    eligible = _eligible(cfg, output)
    outcomes = _outcomes(output)
    for lang in LANGUAGES:
        order = walk_down(eligible, cfg, lang)
        drawn = outcomes[lang]
        # What the rounds drew is a prefix of the walk, long enough to reach the N-th pass.
        assert set(order[: len(drawn)]) == set(drawn)
        passed = [cid for cid in order[: len(drawn)] if drawn[cid] in ("accepted", "beyond_quota")]
        expected = passed[:N]
        assert len(expected) == N
        assert sorted(cid for cid, outcome in drawn.items() if outcome == "accepted") == sorted(expected)
        assert Counter(drawn.values())["no_translation"] > 0  # the walk went past failures
        numbers = json.loads((output / "audit" / "counts.json").read_text())["fill"][lang]
        assert numbers["accepted"] == N and numbers["why_short"] is None and numbers["rounds"] >= 2
        assert numbers["drawn"] == len(drawn) == audit["languages"][lang]["sampled"]


def test_fill_gives_the_same_pairs_with_two_processes(filled):
    runs, _ = filled
    accepted = {
        name: sorted((row["target_lang"], row["caption_id"], row["translated_text"])
                     for row in _rows(output, "accepted"))
        for name, (output, _) in runs.items()
    }
    assert accepted["one"] == accepted["two"] and len(accepted["one"]) == N * len(LANGUAGES)


def test_max_per_image_holds_in_every_language(filled):
    runs, _ = filled
    output, audit = runs["one"]
    for lang in LANGUAGES:
        images = Counter(image_of_row(row) for row in _rows(output, "accepted") if row["target_lang"] == lang)
        assert max(images.values()) <= 2
        assert audit["languages"][lang]["distinct_images"] == len(images)


def image_of_row(row):
    if row["image_id"]:
        return f"{row['dataset']}:{row['image_id']}"
    return f"url:{row['image_url']}" if row["image_url"] else f"caption:{row['caption_id']}"


def test_fill_reports_why_a_language_falls_short(tmp_path):
    # Multi30k's 50 validation captions: fewer than asked, so the language exhausts them.
    inputs = json.dumps([{"format": "multi30k", "path": str(MULTI30K / "val.en")}])
    audit = cli.run(["--config", DEMO, "--output", str(tmp_path), "--set", f"inputs={inputs}",
                     "--set", "sample.fill=true", "--set", "sample.per_language=5000"])
    counts = json.loads((tmp_path / "audit" / "counts.json").read_text())["fill"]
    assert audit["ok"], audit["checks"]
    for lang in LANGUAGES:
        assert counts[lang]["why_short"] == "eligible_exhausted"
        assert counts[lang]["short_by"] == 5000 - audit["languages"][lang]["accepted"] > 0
        assert audit["fill"][lang]["why_short"] == "eligible_exhausted"


def test_fill_needs_a_fixed_threshold():
    with pytest.raises(ConfigError, match=r"^sample.fill: needs a fixed keep.min_similarity"):
        load_config(DEMO, ["sample.fill=true", "keep.min_similarity=null", "keep.keep_top_fraction=0.5"])
    with pytest.raises(ConfigError, match=r"^sample.fill: needs a fixed keep.min_similarity"):
        load_config(DEMO, ["sample.fill=true", "keep.memory_share=0.99"])
    with pytest.raises(ConfigError, match=r"^translation.max_characters: "):
        load_config(DEMO, ["translation.max_characters=-1"])
    with pytest.raises(ConfigError, match=r"^sample.fill_rounds: "):
        load_config(DEMO, ["sample.fill_rounds=0"])


def test_the_cap_funds_languages_in_turns_down_their_rank_order():
    lengths = {"de": [10, 10, 10], "fr": [5, 50]}
    assert funded_counts(100, lengths, ["de", "fr"]) == {"de": 3, "fr": 2}
    # de 10, fr 5, de 10 fit in 25; fr's 50 does not: it and everything after are left out.
    assert funded_counts(25, lengths, ["de", "fr"]) == {"de": 2, "fr": 1}
    assert funded_counts(60, lengths, ["de", "fr"]) == {"de": 2, "fr": 1}
    assert funded_counts(24, lengths, ["de", "fr"]) == {"de": 1, "fr": 1}
    assert funded_counts(9, lengths, ["de", "fr"]) == {"de": 0, "fr": 0}
    assert funded_counts(0, {}, ["de"]) == {"de": 0}


# --- the cap, against the AWS stand-in -------------------------------------------------------

@pytest.fixture(scope="module")
def translations():
    read = lambda lang: (MULTI30K / f"val.{lang}").read_text(encoding="utf-8").splitlines()
    return {(lang, en.strip()): other for lang in LANGUAGES for en, other in zip(read("en"), read(lang))}


def _paid_args(output, fake, cap, *extra):
    """The demo's config on Multi30k's validation captions, every one sent to the AWS stand-in,
    with a spending cap of ``cap`` characters."""
    inputs = json.dumps([{"format": "multi30k", "path": str(MULTI30K / "val.en")}])
    return [
        "--config", DEMO, "--output", str(output), "--set", f"inputs={inputs}",
        "--set", "translation.memory=[]", "--set", "translation.provider=aws",
        "--set", f"translation.aws.endpoint_url={fake.endpoint_url}",
        "--set", "translation.batch_size=4", "--set", "sample.per_language=30",
        "--set", f"translation.max_characters={cap}", *extra,
    ]


def _paid_run(output, fake, cap, *extra):
    return cli.run(_paid_args(output, fake, cap, *extra))


@pytest.mark.parametrize("extra", [("--direct_running_mode=multi_processing", "--direct_num_workers=2"),
                                   ("--direct_runner_bundle_repeat=1",)], ids=["two-processes", "replayed"])
def test_the_cap_holds_and_a_higher_cap_pays_only_for_the_new_pairs(tmp_path, translations, extra):
    cfg = load_config(DEMO, ["sample.per_language=30"])
    with FakeTranslate(translations) as fake:
        first = _paid_run(tmp_path, fake, 1000, *extra)
        billed = fake.billed_characters
        assert 0 < billed <= 1000
        assert first["ok"], first["checks"]
        budget = first["translation"]["budget"]
        assert budget["max_characters"] == 1000 and budget["spent"] == billed
        assert budget["left"] == 1000 - billed
        for lang in LANGUAGES:
            rows = _outcomes(tmp_path)[lang]
            over = {cid for cid, outcome in rows.items() if outcome == "over_budget"}
            paid = set(rows) - over
            assert over and paid
            assert budget["languages"][lang]["over_budget_pairs"] == len(over)
            # Funded is a prefix of the language's rank order.
            rank = lambda cid: pair_rank(cfg.sample, _Pair(cid, lang))  # noqa: E731
            assert max(map(rank, paid)) < min(map(rank, over))

        again = _paid_run(tmp_path, fake, 100_000, *extra)
        assert again["ok"], again["checks"]
        assert len(fake.answered) == len(set(fake.answered)) == 60  # nothing paid twice
        assert again["translation"]["totals"]["characters_billed"] == fake.billed_characters - billed
        assert all(again["languages"][lang]["failed"] == 0 for lang in LANGUAGES)


class _Pair:
    def __init__(self, caption_id, target_lang):
        self.caption_id, self.target_lang = caption_id, target_lang


def test_the_dry_run_shows_what_the_cap_leaves_out(tmp_path, translations):
    with FakeTranslate(translations) as fake:
        estimate = cli.dry_run(_paid_args(tmp_path, fake, 1000))
        assert fake.requests == 0
    for lang in LANGUAGES:
        numbers = estimate["languages"][lang]
        assert numbers["over_budget_pairs"] > 0
        assert numbers["characters_to_bill"] + numbers["over_budget_characters"] == numbers["miss_characters"]
    assert sum(n["characters_to_bill"] for n in estimate["languages"].values()) <= 1000


def test_the_demo_with_a_paid_provider_pays_little_beyond_what_it_needed(tmp_path):
    """Quota fill's overdraw, measured on the demo with its misses sent to the AWS stand-in:
    billed characters against those of the paid pairs the result needed (accepted, or
    rejected for quality)."""
    corpus = {}
    for split in ("val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco"):
        read = lambda lang: (MULTI30K / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()  # noqa: E731
        corpus.update({(lang, en.strip()): other for lang in LANGUAGES for en, other in zip(read("en"), read(lang))})
    with FakeTranslate(corpus) as fake:
        audit = cli.run(["--config", DEMO, "--output", str(tmp_path), "--set", "translation.provider=aws",
                         "--set", f"translation.aws.endpoint_url={fake.endpoint_url}",
                         "--set", "translation.memory=[]"])
    assert audit["ok"], audit["checks"]
    needed = sum(
        len(row["source_text"])
        for kind in ("accepted", "rejected") for row in _rows(tmp_path, kind)
        if row["provider"] == "aws" and (kind == "accepted" or row["stage"] != "fill")
    )
    assert all(audit["languages"][lang]["accepted"] == 600 for lang in LANGUAGES)
    assert fake.billed_characters <= 1.15 * needed, (fake.billed_characters, needed)


def test_quota_fill_under_a_cap_stops_where_the_cap_does(tmp_path, translations):
    with FakeTranslate(translations) as fake:
        audit = _paid_run(tmp_path, fake, 1500)  # the demo's config fills its quota
    assert audit["ok"], audit["checks"]
    assert 0 < fake.billed_characters <= 1500
    for lang in LANGUAGES:
        fill = audit["fill"][lang]
        assert fill["why_short"] == "budget" and fill["rounds"] == 1
        assert fill["accepted"] == audit["languages"][lang]["accepted"] < 30
        assert audit["languages"][lang]["failed_by_reason"]["over_budget"] > 0
