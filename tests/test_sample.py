from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.sample import SampleCaptions, SampleConfig, sample_rank
from tests.conftest import caption, local_pipeline


def _captions(multi30k_val, count=200):
    return [caption(f"multi30k:val:{n + 1}", text, "multi30k") for n, text in enumerate(multi30k_val["en"][:count])]


def _expected(captions, seed, lang, per_language, shared=False):
    key = "*" if shared else lang
    ranked = sorted(captions, key=lambda c: sample_rank(seed, c.caption_id, key))
    return [(lang, c.caption_id) for c in ranked[:per_language]]


def test_rank_depends_on_seed_language_and_id_only():
    assert sample_rank(7, "coco:38", "de") == sample_rank(7, "coco:38", "de")
    assert sample_rank(7, "coco:38", "de") != sample_rank(8, "coco:38", "de")
    assert sample_rank(7, "coco:38", "de") != sample_rank(7, "coco:38", "fr")


def test_bottom_k_per_language_for_every_input_order_and_worker_count(multi30k_val):
    captions = _captions(multi30k_val)
    cfg = SampleConfig(per_language=25, seed=3)
    expected = _expected(captions, 3, "de", 25) + _expected(captions, 3, "fr", 25)
    assert expected[:25] != [("de", c) for _, c in expected[25:]]  # languages get their own sample
    runs = [
        (captions, ()),
        (captions[::-1], ()),
        (captions, ("--direct_running_mode=multi_processing", "--direct_num_workers=2")),
    ]
    for order, options in runs:
        with local_pipeline(*options) as pipeline:
            sampled = pipeline | beam.Create(order) | SampleCaptions(cfg, ["de", "fr"])
            assert_that(
                sampled.kept | beam.Map(lambda p: (p.target_lang, p.caption_id)), equal_to(expected)
            )
            assert_that(sampled.counts, equal_to([("sampled", {"de": 25, "fr": 25})]), label="Counts")


def test_shared_sample_gives_every_language_the_same_captions(multi30k_val):
    captions = _captions(multi30k_val)
    cfg = SampleConfig(per_language=10, seed=0, shared=True)
    ids = [c for _, c in _expected(captions, 0, "de", 10, shared=True)]
    with local_pipeline() as pipeline:
        pairs = (pipeline | beam.Create(captions) | SampleCaptions(cfg, ["de", "fr", "cs"])).kept
        assert_that(
            pairs | beam.Map(lambda p: (p.target_lang, p.caption_id)),
            equal_to([(lang, c) for lang in ("de", "fr", "cs") for c in ids]),
        )


def test_fewer_captions_than_asked_are_all_sampled(multi30k_val):
    captions = _captions(multi30k_val, count=5)
    with local_pipeline() as pipeline:
        pairs = (pipeline | beam.Create(captions) | SampleCaptions(SampleConfig(per_language=40), ["de"])).kept
        assert_that(
            pairs | beam.Map(lambda p: (p.caption_id, p.source_text, p.translated_text)),
            equal_to([(c.caption_id, c.text, None) for c in captions]),
        )


def _coco_captions():
    """The bundled COCO captions, five per image, as the read stage makes them."""
    import json

    from polycap.transforms.records import Caption
    from tests.conftest import SAMPLES

    data = json.loads((SAMPLES / "coco" / "captions_val2017.cut.json").read_text(encoding="utf-8"))
    return [
        Caption(f"coco:{a['id']}", "coco", str(a["image_id"]), None, "en", a["caption"])
        for a in data["annotations"]
    ]


def walk_down(captions, seed, key, per_language, max_per_image):
    """The sample by hand: down the rank order, a caption taken while its image has fewer than
    ``max_per_image`` taken, until ``per_language``."""
    taken, per_image = [], Counter()
    for c in sorted(captions, key=lambda c: sample_rank(seed, c.caption_id, key)):
        if len(taken) == per_language:
            break
        if per_image[c.image_id] < max_per_image:
            per_image[c.image_id] += 1
            taken.append(c.caption_id)
    return taken


@pytest.mark.parametrize("shared", [False, True])
def test_at_most_k_captions_of_one_image_per_language(shared):
    captions = _coco_captions()  # 119 images
    cfg = SampleConfig(per_language=100, seed=5, shared=shared, max_per_image=1)
    expected = [
        (lang, caption_id)
        for lang in ("de", "fr")
        for caption_id in walk_down(captions, 5, "*" if shared else lang, 100, 1)
    ]
    with local_pipeline() as pipeline:
        sampled = pipeline | beam.Create(captions) | SampleCaptions(cfg, ["de", "fr"])
        assert_that(sampled.kept | beam.Map(lambda p: (p.target_lang, p.caption_id)), equal_to(expected))
    # 100 distinct images in each language, where the uncapped sample of 100 repeats images.
    by_id = {c.caption_id: c.image_id for c in captions}
    for lang in ("de", "fr"):
        assert len({by_id[caption_id] for l, caption_id in expected if l == lang}) == 100
    assert len({by_id[i] for i in walk_down(captions, 5, "de", 100, 5)}) < 100


def test_max_per_image_is_validated():
    from polycap.transforms.errors import ConfigError
    from polycap.pipeline import config

    with pytest.raises(ConfigError, match=r"^sample.max_per_image: .*greater than or equal to 1"):
        config.from_dict({"languages": ["de"], "inputs": [{"format": "gcc", "path": "x"}],
                          "sample": {"per_language": 3, "max_per_image": 0},
                          "keep": {"min_similarity": 0.5}})
