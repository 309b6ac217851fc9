import textwrap

import pytest

from polycap.pipeline import config
from polycap.transforms.encoders import ScoreBackend
from polycap.transforms.errors import ConfigError

MINIMAL = {
    "languages": ["de", "fr"],
    "inputs": [{"format": "coco", "path": "data/samples/coco/*.json"}],
    "sample": {"per_language": 10},
    "keep": {"min_similarity": 0.5},
}


def _with(**changes):
    raw = {key: (dict(value) if isinstance(value, dict) else value) for key, value in MINIMAL.items()}
    raw.update(changes)
    return raw


def test_minimal_config_gets_defaults():
    cfg = config.from_dict(_with())
    assert cfg.propn.max_propn_ratio == 0.8
    assert cfg.score.backend is ScoreBackend.USE_MULTILINGUAL
    assert cfg.languages == ("de", "fr")


def test_every_shipped_config_loads():
    from tests.conftest import ROOT

    shipped = sorted((ROOT / "configs").glob("*.yaml"))
    assert shipped
    for path in shipped:
        config.load(path)


@pytest.mark.parametrize(
    "raw, message",
    [
        (_with(sampel={"per_language": 3}), r"^sampel: Extra inputs are not permitted"),
        (_with(sample={"per_language": 0}), r"^sample.per_language: .*greater than or equal to 1"),
        (_with(sample={"per_language": "many"}), r"^sample.per_language: .*valid integer"),
        (_with(sample={"per_language": 3, "preselect_margin": 0.9}), r"^sample.preselect_margin: .*greater than or equal to 1"),
        (_with(keep={"min_similarity": 1.5}), r"^keep.min_similarity: 1.5 is a cosine threshold, in \[-1, 1\]; a margin threshold needs score.margin: true$"),
        (_with(keep={"min_similarity": 0.0}, score={"margin": True}), r"^keep.min_similarity: 0.0 with score.margin: true is a ratio-margin threshold, in \(0, 3\]"),
        (_with(keep={"min_similarity": 3.5}, score={"margin": True}), r"^keep.min_similarity: 3.5 with score.margin"),
        (_with(score={"margin": True, "margin_reference_pairs": 1}), r"^score.margin_reference_pairs: .*greater than or equal to 2"),
        (_with(keep={"min_similarity": 1.1}, score={"margin": True}), r"^score.margin_reference_pairs: 1000 is more than sample.per_language \(10\)"),
        (_with(keep={"min_similarity": -1.01}), r"^keep.min_similarity: .*greater than or equal to -1"),
        (_with(keep={}), r"^keep: set exactly one of min_similarity and keep_top_fraction"),
        (_with(keep={"keep_top_fraction": 0.5, "memory_share": 0.99}), r"^keep: memory_share raises min_similarity per language: set min_similarity"),
        (_with(keep={"min_similarity": 0.5, "memory_share": 1.5}), r"^keep.memory_share: .*less than or equal to 1"),
        (_with(keep={"min_similarity": 0.5, "checks": {"numbrs": False}}), r"^keep.checks.numbrs: Extra inputs"),
        (_with(keep={"min_similarity": 0.5, "checks": {"other_languages": ["en", "german"]}}), r"^keep.checks.other_languages: .*unknown language code 'german'"),
        (_with(keep={"min_similarity": 0.5, "checks": {"names": "maybe"}}), r"^keep.checks.names: .*valid boolean"),
        (_with(keep={"min_similarity": 0.5, "checks": {"min_length_ratio": 4}}), r"^keep.checks: min_length_ratio must be below max_length_ratio"),
        (_with(languages=["de", "klingon"]), r"^languages: unknown language code 'klingon'"),
        (_with(languages=[]), r"^languages: "),
        (_with(source_lang="xx"), r"^source_lang: unknown language code 'xx'"),
        (_with(inputs=[{"format": "flickr", "path": "x"}]), r"^inputs\[0\].format: "),
        (_with(inputs=[{"format": "gcc", "path": "x", "limit": 3}]), r"^inputs\[0\].limit: Extra inputs"),
        (_with(score={"backend": "sentence-transformers"}), r"^score: model is required"),
        (_with(clean={"max_bytes": 20000}), r"^clean.max_bytes: .*less than or equal to 10000"),
        (_with(read={"unreadable_files": "ignore"}), r"^read.unreadable_files: Input should be 'fail' or 'record'"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match=message) as raised:
        config.from_dict(raw)
    assert "\n" not in str(raised.value)


def test_overrides_are_typed_and_validated_like_the_file():
    cfg = config.from_dict(_with(), ["sample.per_language=25", "languages=[de, it]", "inputs.0.path=x.json"])
    assert cfg.sample.per_language == 25
    assert cfg.languages == ("de", "it")
    assert cfg.inputs[0].path == "x.json"
    with pytest.raises(ConfigError, match=r"^sample.per_language: "):
        config.from_dict(_with(), ["sample.per_language=0"])
    with pytest.raises(ConfigError, match=r"^sample.seeed: Extra inputs"):
        config.from_dict(_with(), ["sample.seeed=3"])
    with pytest.raises(ConfigError, match=r"expected dotted.key=value"):
        config.from_dict(_with(), ["sample.per_language"])


def test_load_reports_bad_yaml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(textwrap.dedent("languages: [de\ninputs: 3\n"))
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        config.load(broken)
    with pytest.raises(ConfigError, match=r"No such file"):
        config.load(tmp_path / "absent.yaml")


def test_with_margin_min_similarity_is_a_margin_threshold():
    score = {"margin": True, "margin_reference_pairs": 10}
    cfg = config.from_dict(_with(keep={"min_similarity": 1.05}, score=score))
    assert (cfg.score.margin, cfg.keep.min_similarity) == (True, 1.05)
    assert (cfg.score.margin_k, cfg.score.margin_reference_pairs, cfg.score.margin_seed) == (4, 10, 0)
