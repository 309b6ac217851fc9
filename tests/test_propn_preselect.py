"""The PROPN stage with ``sample.preselect_margin``: tagging only the captions sampling can
choose gives exactly the sample of tagging them all."""

import math

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.propn import DropProperNounCaptions, PropnConfig
from polycap.transforms.sample import SampleCaptions, SampleConfig, sample_rank
from tests.conftest import caption, local_pipeline

LANGUAGES = ["de", "fr"]


def _tagger_rejecting(texts):
    """A fake tagger's loader (pickled by value) that tags ``texts`` all PROPN, others NOUN."""
    rejected = frozenset(texts)

    class Token:
        def __init__(self, pos):
            self.pos_ = pos

    class Tagger:
        def pipe(self, batch, batch_size):
            return [[Token("PROPN" if text in rejected else "NOUN")] for text in batch]

    def load(model):
        return Tagger()

    return load


def _captions(multi30k_val, count=200):
    return [caption(f"multi30k:val:{n + 1}", text, "multi30k") for n, text in enumerate(multi30k_val["en"][:count])]


def _smallest(captions, cfg, key, count):
    return sorted(captions, key=lambda c: sample_rank(cfg.seed, c.caption_id, key))[:count]


def _keys(cfg):
    return ["*"] if cfg.shared else LANGUAGES


def _expected_sample(captions, rejected, cfg):
    eligible = [c for c in captions if c.text not in rejected]
    return [
        (lang, c.caption_id)
        for key in _keys(cfg)
        for lang in (LANGUAGES if key == "*" else [key])
        for c in _smallest(eligible, cfg, key, cfg.per_language)
    ]


class _Tagged:
    """The stage's output split the way the tests look at it: ``untagged`` are the kept
    captions without a PROPN ratio, ``tagged`` every caption the tagger judged."""

    def __init__(self, out):
        self.untagged = out.kept | "Untagged" >> beam.Filter(lambda c: c.propn_ratio is None)
        judged = out.kept | "Judged" >> beam.Filter(lambda c: c.propn_ratio is not None)
        self.tagged = (judged, out.rejected) | "Tagged" >> beam.Flatten()
        self.rejected = out.rejected
        self.counts = out.counts


def _run(captions, rejected, cfg):
    with local_pipeline() as pipeline:
        out = pipeline | beam.Create(captions) | DropProperNounCaptions(
            PropnConfig(), cfg, LANGUAGES, load_tagger=_tagger_rejecting(rejected)
        )
        sampled = out.kept | SampleCaptions(cfg, LANGUAGES)
        pairs = sampled.kept | "Sampled" >> beam.Map(lambda p: (p.target_lang, p.caption_id))
        assert_that(pairs, equal_to(_expected_sample(captions, rejected, cfg)), label="Sample")
        eligible = len(captions) - len([c for c in captions if c.text in rejected])
        yield _Tagged(out), eligible


@pytest.mark.parametrize("shared", [False, True])
def test_only_candidates_are_tagged_and_the_sample_is_unchanged(multi30k_val, shared):
    captions = _captions(multi30k_val)
    cfg = SampleConfig(per_language=20, preselect_margin=1.5, shared=shared)
    rejected = {c.text for c in captions[::10]}
    candidates = {
        c.caption_id for key in _keys(cfg) for c in _smallest(captions, cfg, key, math.ceil(20 * 1.5))
    }
    never_tagged = sorted(c.caption_id for c in captions if c.caption_id not in candidates)
    assert never_tagged and len(never_tagged) < len(captions)
    for tagged, _ in _run(captions, rejected, cfg):
        ids = lambda label, rows: rows | label >> beam.Map(lambda row: row.caption_id)
        assert_that(ids("UntaggedIds", tagged.untagged), equal_to(never_tagged), label="Untagged")
        assert_that(
            ids("TaggedIds", tagged.tagged), equal_to(sorted(candidates)), label="TaggedAreCandidates"
        )


def test_a_shortfall_tags_every_caption(multi30k_val):
    # Three in five captions are PROPN-heavy: 25 % more candidates than the sample cannot cover.
    captions = _captions(multi30k_val)
    rejected = {c.text for n, c in enumerate(captions) if n % 5 < 3}
    for tagged, eligible in _run(captions, rejected, SampleConfig(per_language=20, preselect_margin=1.25)):
        assert_that(tagged.untagged, equal_to([]), label="NoneUntagged")
        assert_that(
            tagged.tagged | beam.combiners.Count.Globally(),
            equal_to([len(captions)]),
            label="AllTagged",
        )
        # The stage's own counts: every caption it kept is eligible, none untagged.
        assert_that(tagged.counts, equal_to([("eligible", eligible), ("untagged", 0)]), label="Counts")


def test_fewer_captions_than_candidates_are_all_tagged(multi30k_val):
    captions = _captions(multi30k_val, count=5)
    for tagged, _ in _run(captions, {captions[0].text}, SampleConfig(per_language=40)):
        assert_that(tagged.untagged, equal_to([]), label="NoneUntagged")
        assert_that(tagged.rejected | beam.Map(lambda row: row.caption_id),
                    equal_to([captions[0].caption_id]), label="Rejected")


@pytest.mark.parametrize("rejected_share", [3, 2])  # a third, then half, of the captions PROPN-heavy
def test_with_an_image_cap_the_sample_is_that_of_tagging_every_caption(rejected_share):
    from tests.test_sample import _coco_captions, walk_down

    captions = _coco_captions()  # five per image
    rejected = {c.text for n, c in enumerate(captions) if n % rejected_share == 0}
    cfg = SampleConfig(per_language=30, seed=11, preselect_margin=1.25, max_per_image=1)
    eligible = [c for c in captions if c.text not in rejected]
    expected = [(lang, i) for lang in LANGUAGES for i in walk_down(eligible, 11, lang, 30, 1)]
    with local_pipeline() as pipeline:
        out = pipeline | beam.Create(captions) | DropProperNounCaptions(
            PropnConfig(), cfg, LANGUAGES, load_tagger=_tagger_rejecting(rejected)
        )
        sampled = out.kept | SampleCaptions(cfg, LANGUAGES)
        assert_that(sampled.kept | beam.Map(lambda p: (p.target_lang, p.caption_id)), equal_to(expected))
