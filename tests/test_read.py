"""ReadCaptions on the real sample files in data/samples, and on small broken files in tmp_path."""

import collections
import gzip
import json

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.read import InputConfig
from tests.conftest import SAMPLES, local_pipeline
from polycap.transforms.read import ReadCaptions
from polycap.transforms.records import Caption, Rejected


GCC = SAMPLES / "gcc" / "Validation_GCC-1.1.0-Validation.first500.tsv"
COCO = SAMPLES / "coco" / "captions_val2017.cut.json"
VIZWIZ = SAMPLES / "vizwiz" / "val.first33images.json"
MULTI30K = SAMPLES / "parallel" / "multi30k"
GCC_ID = "gcc:Validation_GCC-1.1.0-Validation.first500"
VIZWIZ_IMAGES = "https://ivc.ischool.utexas.edu/VizWiz_visualization_img/"


def source(fmt, path):
    return InputConfig(format=fmt, path=str(path))


def run_read(inputs, check, source_lang="en"):
    """Apply ReadCaptions, let ``check(out)`` add its assertions, run; -> the read counters."""
    pipeline = local_pipeline()
    check(pipeline | ReadCaptions(inputs, source_lang))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("read"))["counters"]
    summed = collections.Counter()  # one reader step per input counts under the same names
    for counter in counters:
        summed[counter.key.metric.name] += counter.committed
    return dict(summed)


def ids_and_reasons(rows):
    return rows | beam.Map(lambda row: (row.caption_id, row.reason))


def count_per(rows, key):
    return rows | beam.Map(lambda row: (key(row), 1)) | beam.CombinePerKey(sum)


ALL_SAMPLES = [
    source("gcc", GCC),
    source("coco", COCO),
    source("vizwiz", VIZWIZ),
    source("multi30k", MULTI30K / "*.en"),
]


def test_every_sample_caption_is_read_once_and_counted():
    def check(out):
        assert_that(
            count_per(out.kept, lambda c: c.dataset),
            equal_to([("gcc", 500), ("coco", 595), ("vizwiz", 134), ("multi30k", 4546)]),
            label="Kept per dataset",
        )
        ids = (out.kept, out.rejected) | beam.Flatten() | beam.Map(lambda row: row.caption_id)
        assert_that(
            ids | beam.combiners.Count.PerElement() | beam.Filter(lambda kv: kv[1] > 1),
            equal_to([]),
            label="No id twice",
        )
        assert_that(out.failed, equal_to([]), label="Nothing failed")
        # what counts.json says was read: every kept and rejected row
        assert_that(out.counts, equal_to([("read", 500 + 595 + 134 + 4546 + 29 + 2)]), label="Read")

    counters = run_read(ALL_SAMPLES, check)
    # per dataset: gcc 500, coco 595, vizwiz 134, multi30k 4546 (checked from the rows above)
    assert counters == {"kept": 500 + 595 + 134 + 4546, "precanned": 29, "rejected_by_annotators": 2}


def test_real_captions_keep_their_ids_images_and_text_as_read():
    expected = [
        Caption(f"{GCC_ID}:1", "gcc", None,
                "https://i.pinimg.com/736x/66/01/6c/"
                "66016c3ba27c0e04f39e2bd81a934e3e--anita-ekberg-bob-hope.jpg",
                "en", "author : a life in photography -- in pictures"),
        Caption("coco:441", "coco", "331352",
                "http://images.cocodataset.org/val2017/000000331352.jpg",
                "en", "A small closed toilet in a cramped space."),
        # COCO's trailing spaces stay: normalising is the clean stage's work.
        Caption("coco:671034", "coco", "342367",
                "http://images.cocodataset.org/val2017/000000342367.jpg",
                "en", "A TV showing two men in hats and women.   "),
        Caption("vizwiz:117155", "vizwiz", "23431", VIZWIZ_IMAGES + "VizWiz_val_00000000.jpg",
                "en", "A computer screen shows a repair prompt on the screen."),
        Caption("vizwiz:117250", "vizwiz", "23450", VIZWIZ_IMAGES + "VizWiz_val_00000019.jpg",
                "en", 'The underside of a Dell Inspiron laptop showing the device label '
                'including the text "Inspiron 1545".'),
        Caption("multi30k:val:1", "multi30k", "1018148011.jpg", None,
                "en", "A group of men are loading cotton onto a truck"),
        Caption("multi30k:test_2017_mscoco:14", "multi30k", "COCO_val2014_000000384136.jpg", None,
                "en", "A woman points a hair drier like it is a gun."),
    ]
    wanted = {caption.caption_id for caption in expected}

    def check(out):
        assert_that(out.kept | beam.Filter(lambda c: c.caption_id in wanted), equal_to(expected))

    run_read(ALL_SAMPLES, check)


def test_vizwiz_precanned_and_annotator_rejected_captions_become_rejected_rows():
    annotations = json.loads(VIZWIZ.read_text(encoding="utf-8"))["annotations"]
    precanned = {a["id"] for a in annotations if a["is_precanned"]}
    by_annotators = {a["id"] for a in annotations if a["is_rejected"]}
    assert (len(precanned), by_annotators) == (29, {117267, 117268, 117316})
    expected = [(f"vizwiz:{i}", "precanned") for i in precanned] + [
        ("vizwiz:117267", "rejected_by_annotators"),
        ("vizwiz:117316", "rejected_by_annotators"),
    ]  # 117268 is both: precanned wins
    both = Rejected(
        "vizwiz:117268", "vizwiz", "23453", VIZWIZ_IMAGES + "VizWiz_val_00000022.jpg", "en",
        None, "Quality issues are too severe to recognize visual content.",
        None, None, None, None, None, None, "read", "precanned",
    )

    def check(out):
        assert_that(ids_and_reasons(out.rejected), equal_to(expected), label="Reasons")
        assert_that(
            out.rejected | beam.Filter(lambda r: r.caption_id == "vizwiz:117268"),
            equal_to([both]),
            label="Whole row",
        )

    counters = run_read([source("vizwiz", VIZWIZ)], check)
    assert counters["precanned"] == 29
    assert counters["rejected_by_annotators"] == 2


def test_a_glob_reads_every_file_it_matches(tmp_path):
    (tmp_path / "a.tsv").write_text("a red bus\thttp://x/a1.jpg\n", encoding="utf-8")
    (tmp_path / "b.tsv").write_text("two cats\thttp://x/b1.jpg\nthree dogs\thttp://x/b2.jpg\n")
    (tmp_path / "c.txt").write_text("not matched\thttp://x/c1.jpg\n")

    def check(out):
        assert_that(
            out.kept | beam.Map(lambda c: (c.caption_id, c.image_url, c.text)),
            equal_to([
                ("gcc:a:1", "http://x/a1.jpg", "a red bus"),
                ("gcc:b:1", "http://x/b1.jpg", "two cats"),
                ("gcc:b:2", "http://x/b2.jpg", "three dogs"),
            ]),
            label="Gcc",
        )

    run_read([source("gcc", tmp_path / "*.tsv")], check)


def test_multi30k_glob_reads_every_split_with_its_image_list():
    lines = {"val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000,
             "test_2017_mscoco": 461, "test_2018_flickr": 1071}

    def check(out):
        assert_that(count_per(out.kept, lambda c: c.caption_id.split(":")[1]),
                    equal_to(list(lines.items())), label="Per split")
        assert_that(out.kept | beam.Filter(lambda c: not c.image_id), equal_to([]),
                    label="Every line has its image")

    run_read([source("multi30k", MULTI30K / "*.en")], check)


def test_multi30k_image_ids_come_from_the_image_list_beside_the_text_if_any(tmp_path):
    (tmp_path / "dev.en").write_text("A man.\nA dog.\n", encoding="utf-8")
    (tmp_path / "short.en").write_text("One.\nTwo.\n", encoding="utf-8")
    (tmp_path / "image_splits_short.txt").write_text("1.jpg#7\n", encoding="utf-8")
    (tmp_path / "packed.en.gz").write_bytes(gzip.compress("Gzipped.\n".encode()))
    (tmp_path / "image_splits_packed.txt").write_text("9.jpg\n", encoding="utf-8")

    def check(out):
        assert_that(
            out.kept | beam.Map(lambda c: (c.caption_id, c.image_id, c.text, c.source_lang)),
            equal_to([
                ("multi30k:dev:1", None, "A man.", "de"),
                ("multi30k:dev:2", None, "A dog.", "de"),
                ("multi30k:short:1", "1.jpg", "One.", "de"),
                ("multi30k:short:2", None, "Two.", "de"),
                ("multi30k:packed:1", "9.jpg", "Gzipped.", "de"),
            ]),
        )

    run_read([source("multi30k", tmp_path / "*.en*")], check, source_lang="de")


def test_malformed_tsv_lines_are_rejected_with_the_whole_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(
        b"a dog on a beach\thttp://x/1.jpg\n"
        b"no tab here\n"
        b"two\ttabs\there\n"
        b"\n"
        b"windows line end\thttp://x/5.jpg\r\n"
        b"\xff not utf-8\thttp://x/6.jpg\n"
        b"  spaces kept  \thttp://x/7.jpg"
    )

    def check(out):
        assert_that(
            out.kept | beam.Map(lambda c: (c.caption_id, c.text, c.image_url)),
            equal_to([
                ("gcc:bad:1", "a dog on a beach", "http://x/1.jpg"),
                ("gcc:bad:5", "windows line end", "http://x/5.jpg"),
                ("gcc:bad:7", "  spaces kept  ", "http://x/7.jpg"),
            ]),
            label="Kept",
        )
        assert_that(
            out.rejected | beam.Map(lambda r: (r.caption_id, r.stage, r.reason, r.source_text)),
            equal_to([
                ("gcc:bad:2", "read", "malformed", "no tab here"),
                ("gcc:bad:3", "read", "malformed", "two\ttabs\there"),
                ("gcc:bad:4", "read", "malformed", ""),
                ("gcc:bad:6", "read", "malformed", "\ufffd not utf-8\thttp://x/6.jpg"),
            ]),
            label="Rejected",
        )

    counters = run_read([source("gcc", path)], check)
    assert counters == {"kept": 3, "malformed": 4}


def test_coco_annotation_without_id_or_string_caption_is_malformed(tmp_path):
    # Images after annotations, and only a flickr_url: the URL must still be found.
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({
        "annotations": [
            {"id": 1, "image_id": 5, "caption": 12},
            {"image_id": 5, "caption": "no id"},
            {"id": "3", "image_id": "5", "caption": "string ids"},
            {"id": 4, "image_id": 99, "caption": "unknown image"},
        ],
        "images": [{"id": 5, "file_name": "5.jpg", "flickr_url": "http://f/5.jpg"}],
    }))

    def check(out):
        assert_that(
            out.kept | beam.Map(lambda c: (c.caption_id, c.image_id, c.image_url, c.text)),
            equal_to([("coco:3", "5", "http://f/5.jpg", "string ids"),
                      ("coco:4", "99", None, "unknown image")]),
            label="Kept",
        )
        assert_that(
            out.rejected | beam.Map(lambda r: (r.caption_id, r.reason, r.source_text)),
            equal_to([("coco:1", "malformed", "12"), ("coco:odd:2", "malformed", "no id")]),
            label="Rejected",
        )

    run_read([source("coco", path)], check)


@pytest.mark.parametrize("fmt", ["coco", "vizwiz"])
def test_broken_json_is_one_failed_row_and_the_pipeline_finishes(tmp_path, fmt):
    truncated = tmp_path / "truncated.json"
    truncated.write_text(
        '{"images": [{"id": 5, "coco_url": "u", "vizwiz_url": "u"}], "annotations": ['
        '{"id": 1, "image_id": 5, "caption": "read before the break"}, {"id": 2, "capt'
    )
    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is not JSON")

    def check(out):
        assert_that(
            out.kept | beam.Map(lambda c: (c.caption_id, c.image_url, c.text)),
            equal_to([(f"{fmt}:1", "u", "read before the break")]),
            label="Kept",
        )
        assert_that(
            out.failed | beam.Map(lambda f: (f.caption_id, f.dataset, f.source_lang, f.stage,
                                             f.reason, f.error.startswith(f.caption_id[5:]),
                                             "\n" in f.error)),
            equal_to([(f"file:{path}", fmt, "en", "read", "unreadable_file", True, False)
                      for path in (garbage, truncated)]),
            label="Failed",
        )
        assert_that(out.failed | beam.Map(lambda f: f.error.split("JSON: ", 1)[1]),
                    equal_to(["parse error: premature EOF",
                              "lexical error: invalid string in json text."]),
                    label="Parser errors")

    counters = run_read([source(fmt, tmp_path / "*.json")], check)
    assert counters == {"kept": 1, "unreadable_file": 2}



def test_a_broken_gzip_stream_is_a_failed_row_not_silence_or_a_crash(tmp_path):
    # A cut .gz (a download that stopped): the lines before the cut are read, the rest is one
    # failed row; a file that only claims to be gzip is one failed row too.
    tsv = (SAMPLES / "gcc" / "Validation_GCC-1.1.0-Validation.first500.tsv").read_bytes()
    packed = gzip.compress(tsv)
    (tmp_path / "cut.tsv.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "plain.tsv.gz").write_bytes(tsv[:2000])

    def check(out):
        assert_that(
            out.failed | beam.Map(lambda f: (f.caption_id.rsplit("/", 1)[1], f.reason)),
            equal_to([("cut.tsv.gz", "unreadable_file"), ("plain.tsv.gz", "unreadable_file")]),
            label="Failed",
        )
        assert_that(
            out.kept | beam.combiners.Count.Globally() | beam.Map(lambda n: 0 < n < 500),
            equal_to([True]),
            label="Read up to the cut",
        )

    counters = run_read([source("gcc", tmp_path / "*.tsv.gz")], check)
    assert counters["unreadable_file"] == 2
