import apache_beam as beam
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.clean import CleanCaptions, CleanConfig, Reason, judge
from polycap.transforms.text import match_key, normalise
from tests.conftest import caption, local_pipeline


@pytest.mark.parametrize(
    "raw, expected",
    [
        # VizWiz annotation 117250 keeps escaped quotes and a double space.
        ('a laptop with a sticker that says  "Inspiron 1545"', 'a laptop with a sticker that says "Inspiron 1545"'),
        ("  A man riding a wave on top of a surfboard.\n", "A man riding a wave on top of a surfboard."),
        ("Cafe\u0301 sign\u200b on a wall", "Caf\u00e9 sign on a wall"),  # NFC, zero-width space dropped
        ("a dog\x00 on\tthe\r\nbeach", "a dog on the beach"),
        ("", ""),
    ],
)
def test_normalise(raw, expected):
    assert normalise(raw) == expected


def test_match_key_ignores_case_space_and_final_punctuation():
    assert match_key("A man riding a horse. ") == match_key("a man  riding a horse")
    assert match_key("A man riding a horse") != match_key("A man riding a horse cart")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", Reason.EMPTY),
        ("1545 !!!", Reason.NOT_TEXT),
        ("a dog", Reason.TOO_SHORT),
        ("a dog " * 200, Reason.TOO_LONG),
        ("an angler fishes river on a snowy day .", None),
    ],
)
def test_judge(text, reason):
    assert judge(normalise(text), CleanConfig(min_words=3, max_bytes=1000)) is reason


def test_too_long_counts_bytes_not_characters():
    cfg = CleanConfig(min_words=1, max_bytes=22)
    assert judge("ein Fuss ueber Strasse", cfg) is None  # 22 characters, 22 bytes
    assert judge("ein Fuß über Straßen", cfg) is Reason.TOO_LONG  # 20 characters, 23 bytes


def test_clean_stage_keeps_normalised_and_rejects_with_reasons():
    captions = [
        caption("coco:38", "A black Honda motorcycle parked in front of a garage."),
        caption("vizwiz:117250", 'a laptop with a sticker that says  "Inspiron 1545"', "vizwiz"),
        caption("gcc:x:1", "   "),
        caption("gcc:x:2", "2015"),
        caption("gcc:x:3", "actor"),
    ]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(captions) | CleanCaptions(CleanConfig())
    assert_that(
        out.kept | "KeptText" >> beam.Map(lambda c: (c.caption_id, c.text)),
        equal_to(
            [
                ("coco:38", "A black Honda motorcycle parked in front of a garage."),
                ("vizwiz:117250", 'a laptop with a sticker that says "Inspiron 1545"'),
            ]
        ),
        label="Kept",
    )
    assert_that(
        out.rejected | "Reasons" >> beam.Map(lambda r: (r.caption_id, r.stage, r.reason)),
        equal_to(
            [
                ("gcc:x:1", "clean", "empty"),
                ("gcc:x:2", "clean", "not_text"),
                ("gcc:x:3", "clean", "too_short"),
            ]
        ),
        label="Rejected",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("clean"))["counters"]
    }
    assert counters == {"kept": 2, "empty": 1, "not_text": 1, "too_short": 1}
