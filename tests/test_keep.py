import collections
import random

import apache_beam as beam
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.keep import KeepConfig
from tests.conftest import MULTI30K, local_pipeline, pair
from polycap.transforms.keep import KeepPairs, rank_key, top_count


def _multi30k(lang: str, count: int) -> list[str]:
    return (MULTI30K / f"val.{lang}").read_text(encoding="utf-8").splitlines()[:count]


@pytest.mark.parametrize(
    "fraction, n, count",
    [
        (0.3, 10, 3),  # 0.3 * 10 is 3.0000000000000004 in floats
        (0.5, 3, 2),
        (0.1, 1, 1),
        (0.01, 5, 1),
        (1.0, 7, 7),
        (0.7, 10, 7),
        (0.25, 0, 0),
    ],
)
def test_top_count(fraction, n, count):
    assert top_count(fraction, n) == count


def test_rank_key_puts_higher_similarity_then_smaller_id_first():
    pairs = [pair("b", "t", similarity=0.5), pair("a", "t", similarity=0.5), pair("c", "t", similarity=0.9)]
    assert [p.caption_id for p in sorted(pairs, key=rank_key)] == ["c", "a", "b"]


def _counters(result):
    counts = collections.Counter()
    for counter in result.metrics().query(MetricsFilter().with_namespace("keep"))["counters"]:
        counts[counter.key.metric.name] += counter.committed
    return {name: count for name, count in counts.items() if count}


def _scored(caption_id, lang, similarity, translation=None, index=0):
    """A pair of real Multi30k text (English source, its human translation into ``lang``) with
    a given score."""
    english, translated = _multi30k("en", 30), _multi30k(lang, 30)
    return pair(
        caption_id,
        english[index],
        lang,
        translated_text=translated[index] if translation is None else translation,
        provider="memory",
        similarity=similarity,
    )


def test_threshold_accepts_at_or_above_and_rejected_rows_keep_their_score():
    english = _multi30k("en", 1)[0]
    pairs = [
        _scored("m:1", "de", 0.81, index=1),
        _scored("m:2", "de", 0.70, index=2),  # exactly the threshold
        _scored("m:3", "de", 0.69, index=3),
        _scored("m:4", "fr", 0.99, translation=english.upper() + " ."),  # echoed source
        _scored("m:5", "de", None, index=5),
        _scored("m:6", "de", float("nan"), index=6),
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(pairs) | KeepPairs(KeepConfig(min_similarity=0.7))
    assert out.failed is None
    assert_that(
        out.kept | "Kept" >> beam.Map(lambda p: (p.caption_id, p.similarity)),
        equal_to([("m:1", 0.81), ("m:2", 0.70)]),
        label="KeptRows",
    )
    assert_that(
        out.rejected
        | "NotNaN" >> beam.Filter(lambda r: r.caption_id != "m:6")
        | "Rejected" >> beam.Map(lambda r: (r.caption_id, r.stage, r.reason, r.similarity, r.target_lang)),
        equal_to(
            [
                ("m:3", "keep", "low_similarity", 0.69, "de"),
                ("m:4", "keep", "untranslated", 0.99, "fr"),
                ("m:5", "keep", "low_similarity", None, "de"),
            ]
        ),
        label="RejectedRows",
    )
    assert_that(
        out.rejected
        | "NaN" >> beam.Filter(lambda r: r.caption_id == "m:6")
        | "NaNRow" >> beam.Map(lambda r: (r.reason, r.similarity != r.similarity)),
        equal_to([("low_similarity", True)]),
        label="NaNRejected",
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert _counters(result) == {"kept": 2, "low_similarity": 3, "untranslated": 1}


_TOP_PAIRS = [
    # de: 6 translated, scored pairs -> ceil(0.5 * 6) = 3 accepted; a tie at the cut (0.7)
    # is broken by caption_id. The untranslated one does not count in n, despite its score.
    _scored("d:6", "de", 0.9, index=1),
    _scored("d:5", "de", 0.7, index=2),
    _scored("d:2", "de", 0.7, index=3),
    _scored("d:9", "de", 0.7, index=4),
    _scored("d:1", "de", 0.3, index=5),
    _scored("d:3", "de", -0.1, index=6),
    _scored("d:0", "de", 1.0, translation=_multi30k("en", 1)[0]),
    # fr: 3 pairs -> ceil(1.5) = 2 accepted; the unscored one does not count in n.
    _scored("f:1", "fr", 0.2, index=7),
    _scored("f:2", "fr", 0.4, index=8),
    _scored("f:3", "fr", 0.6, index=9),
    _scored("f:4", "fr", None, index=10),
]


@pytest.mark.parametrize(
    "order_seed, options",
    [
        (None, ()),
        (1, ()),
        (2, ("--direct_num_workers=2", "--direct_running_mode=multi_threading")),
        (3, ("--direct_num_workers=2", "--direct_running_mode=multi_processing")),
    ],
)
def test_top_fraction_per_language_is_deterministic(order_seed, options):
    pairs = list(_TOP_PAIRS)
    if order_seed is not None:
        random.Random(order_seed).shuffle(pairs)
    pipeline = local_pipeline(*options)
    out = pipeline | beam.Create(pairs, reshuffle=True) | KeepPairs(KeepConfig(keep_top_fraction=0.5))
    assert_that(
        out.kept | "Kept" >> beam.Map(lambda p: p.caption_id),
        equal_to(["d:6", "d:2", "d:5", "f:3", "f:2"]),
        label="KeptRows",
    )
    assert_that(
        out.rejected | "Rejected" >> beam.Map(lambda r: (r.caption_id, r.reason, r.similarity)),
        equal_to(
            [
                ("d:9", "low_similarity", 0.7),
                ("d:1", "low_similarity", 0.3),
                ("d:3", "low_similarity", -0.1),
                ("d:0", "untranslated", 1.0),
                ("f:1", "low_similarity", 0.2),
                ("f:4", "low_similarity", None),
            ]
        ),
        label="RejectedRows",
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert _counters(result) == {"kept": 5, "low_similarity": 5, "untranslated": 1}


def test_top_fraction_of_one_keeps_every_translated_pair():
    pairs = [_scored(f"d:{i}", "de", 0.1 * i, index=i) for i in range(5)]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(pairs) | KeepPairs(KeepConfig(keep_top_fraction=1.0))
    assert_that(out.kept | beam.Map(lambda p: p.caption_id), equal_to([f"d:{i}" for i in range(5)]))
    assert_that(out.rejected, equal_to([]), label="NoneRejected")
    pipeline.run().wait_until_finish()


def test_pair_checks_reject_whatever_the_score_with_their_reason_and_count():
    english, german = _multi30k("en", 27), _multi30k("de", 27)  # line 26: "Two dogs play ..."
    pairs = [
        _scored("c:1", "de", 0.95, index=25),  # the human translation: kept
        _scored("c:2", "de", 0.93, translation=german[25].replace("Zwei", "Drei"), index=25),
        _scored("c:3", "fr", 0.97, translation=german[25], index=25),  # German, not French
        _scored("c:4", "de", 0.99, translation=english[25], index=25),  # the source again
        _scored("c:5", "de", 0.40, translation=german[25].replace("Zwei", "Drei"), index=25),
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(pairs) | KeepPairs(KeepConfig(min_similarity=0.5))
    assert_that(out.kept | "Kept" >> beam.Map(lambda p: p.caption_id), equal_to(["c:1"]),
                label="KeptRows")
    assert_that(
        out.rejected | "Rejected" >> beam.Map(lambda r: (r.caption_id, r.stage, r.reason, r.similarity)),
        equal_to([
            ("c:2", "keep", "number_mismatch", 0.93),
            ("c:3", "keep", "wrong_language", 0.97),
            ("c:4", "keep", "untranslated", 0.99),  # judged before the checks
            ("c:5", "keep", "number_mismatch", 0.40),  # a check's reason before the score's
        ]),
        label="RejectedRows",
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert _counters(result) == {
        "kept": 1, "number_mismatch": 2, "wrong_language": 1, "untranslated": 1
    }


def test_checks_switched_off_in_the_config_leave_the_score_to_decide():
    german = _multi30k("de", 26)
    changed = _scored("c:2", "de", 0.93, translation=german[25].replace("Zwei", "Drei"), index=25)
    cfg = KeepConfig(min_similarity=0.5, checks={"numbers": False})
    pipeline = local_pipeline()
    out = pipeline | beam.Create([changed]) | KeepPairs(cfg)
    assert_that(out.kept | beam.Map(lambda p: p.caption_id), equal_to(["c:2"]))
    pipeline.run().wait_until_finish()


def test_memory_share_raises_each_language_threshold_to_keep_that_share_of_human_translations():
    def scored(caption_id, lang, similarity, provider, index):
        return _scored(caption_id, lang, similarity, index=index)._replace(provider=provider)

    pairs = [
        # de: 5 memory pairs; the best ceil(0.8 * 5) = 4 end at 0.6, so de's threshold is 0.6
        *[scored(f"m:{i}", "de", score, "memory", i) for i, score in enumerate([0.9, 0.8, 0.7, 0.6, 0.3])],
        scored("a:1", "de", 0.65, "aws", 6),
        scored("a:2", "de", 0.55, "aws", 7),  # above the floor, under de's threshold
        # fr: no memory pair: the floor, min_similarity
        scored("a:3", "fr", 0.45, "aws", 8),
        scored("a:4", "fr", 0.35, "aws", 9),
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(pairs) | KeepPairs(KeepConfig(min_similarity=0.4, memory_share=0.8))
    assert_that(
        out.kept | "Kept" >> beam.Map(lambda p: p.caption_id),
        equal_to(["m:0", "m:1", "m:2", "m:3", "a:1", "a:3"]),
        label="KeptRows",
    )
    assert_that(
        out.rejected | "Rejected" >> beam.Map(lambda r: (r.caption_id, r.reason)),
        equal_to([("m:4", "low_similarity"), ("a:2", "low_similarity"), ("a:4", "low_similarity")]),
        label="RejectedRows",
    )
    assert_that(
        out.counts,
        equal_to([("thresholds", {"de": {"min_similarity": 0.6, "human_pairs": 5}})]),
        label="Thresholds",
    )
    pipeline.run().wait_until_finish()
