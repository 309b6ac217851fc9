"""POS-tag only the captions sampling can still choose.

Sampling keeps, per language, the ``per_language`` captions of smallest rank
``sha256(seed:lang:caption_id)`` among those the PROPN filter kept (``sample.py``), and a
caption's rank does not depend on its tags. So that sample lies among each language's
``ceil(per_language * preselect_margin)`` smallest ranks ("candidates") whenever the filter
keeps at least ``per_language`` of them. Only the candidates are tagged first. If the filter
removes so many candidates of some language that fewer than ``per_language`` remain (a
"shortfall"), every other caption is tagged as well, so the sample is always exactly the one
that tagging every caption gives; the margin only decides how often that second pass runs.

Captions that are candidates of no language and are not needed by a shortfall are never tagged
("untagged"): sampling could not have chosen them. They count as eligible in the audit
(``read = invalid + duplicate + propn + failed + eligible`` still holds), and ``untagged`` says
how many of the eligible were never tagged.

PCollection[Caption] (de-duplicated) -> PreselectOutput(kept=tagged Captions the filter kept,
rejected / failed as ``DropProperNounCaptions``'s, untagged=PCollection[Caption]).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from polycap.pipeline.config import PropnConfig, SampleConfig
from polycap.transforms.propn import DropProperNounCaptions, load_spacy_tagger
from polycap.transforms.records import Caption, Stage
from polycap.transforms.sample import sample_keys, sample_rank

TAG, SKIP = 0, 1


class PreselectOutput(NamedTuple):
    kept: beam.PCollection
    rejected: beam.PCollection
    failed: beam.PCollection
    untagged: beam.PCollection


def _candidate_of(caption: Caption, seed: int, cutoffs: dict[str, Optional[str]], keys):
    """The sample keys (languages) among whose smallest ranks the caption is. A key absent from
    ``cutoffs``, or with cutoff None, has no more captions than candidates: all are candidates."""
    for key in keys:
        cutoff = cutoffs.get(key)
        if cutoff is None or sample_rank(seed, caption.caption_id, key) <= cutoff:
            yield key


class TagSampleCandidates(beam.PTransform):
    """See the module docstring."""

    def __init__(self, propn: PropnConfig, sample: SampleConfig, languages: Sequence[str],
                 load_tagger: Callable[[str], Any] = load_spacy_tagger):
        super().__init__()
        if sample.preselect_margin is None:
            raise ValueError("TagSampleCandidates needs sample.preselect_margin")
        self._propn = propn
        self._sample = sample
        self._keys = sample_keys(sample, languages)
        self._load_tagger = load_tagger

    def expand(self, captions):
        seed, keys, per_language = self._sample.seed, self._keys, self._sample.per_language
        candidates_per_key = math.ceil(per_language * self._sample.preselect_margin)

        def ranks(caption: Caption):
            for key in keys:
                yield key, sample_rank(seed, caption.caption_id, key)

        def cutoff(keyed_ranks):
            key, smallest = keyed_ranks
            return key, max(smallest) if len(smallest) == candidates_per_key else None

        cutoffs = beam.pvalue.AsDict(
            captions
            | "Rank" >> beam.FlatMap(ranks).with_output_types(Tuple[str, str])
            | "SmallestRanks" >> beam.combiners.Top.SmallestPerKey(candidates_per_key)
            | "Cutoff" >> beam.Map(cutoff)
        )
        first, rest = captions | "SplitCandidates" >> beam.Partition(
            lambda caption, _, cutoffs: TAG if any(_candidate_of(caption, seed, cutoffs, keys)) else SKIP,
            2, cutoffs,
        )
        tagged = first | "Tag" >> DropProperNounCaptions(self._propn, self._load_tagger)

        kept_candidates = beam.pvalue.AsDict(
            tagged.kept
            | "KeptCandidateOf" >> beam.FlatMap(_candidate_of, seed, cutoffs, keys).with_output_types(str)
            | "CountKept" >> beam.combiners.Count.PerElement()
        )

        def shortfall(cutoffs, kept) -> bool:
            return any(
                cutoffs.get(key) is not None and kept.get(key, 0) < per_language for key in keys
            )

        def tag_rest(caption, _, cutoffs, kept):
            if shortfall(cutoffs, kept):
                Metrics.counter(Stage.PROPN.value, "tagged_after_shortfall").inc()
                return TAG
            Metrics.counter(Stage.PROPN.value, "untagged").inc()
            return SKIP

        retag, untagged = rest | "ShortfallSplit" >> beam.Partition(tag_rest, 2, cutoffs, kept_candidates)
        retagged = retag | "TagAfterShortfall" >> DropProperNounCaptions(self._propn, self._load_tagger)
        def both(label, part):
            return (getattr(tagged, part), getattr(retagged, part)) | label >> beam.Flatten()

        return PreselectOutput(
            kept=both("Kept", "kept"), rejected=both("Rejected", "rejected"),
            failed=both("Failed", "failed"), untagged=untagged,
        )
