"""The spending cap (``translation.max_characters``): which texts a run may pay for, decided
before any provider call, the same way on any runner, worker count and bundle order.

PCollection[(lookup_key, [Pair])] (the look-up's misses) -> ``Allocated``:
- ``funded``: the misses the cap pays for, unchanged;
- ``over_budget``: the misses it leaves out (the translate stage fails their pairs ``over_budget``);
- ``counts``: ``("budget", {language: {funded_texts, funded_characters, over_budget_texts,
  over_budget_characters}})``;
- ``spent``: a singleton, the characters funded by this allocation and the ones before it.

The rule: each language's misses are put in its sample-rank order (a text's rank is the
smallest of its captions' ranks), and the languages take turns in the order the config lists
them: every language's first text, then every language's second, and so on. Texts are funded in
that order until the next one would take the characters over the cap; it and every text after
it are left out. So what is funded is a prefix of each language's rank order, the languages
share the cap about equally in texts, and the allocation depends only on the misses.

Only misses count: memory and store hits cost nothing, so a rerun with a higher cap funds the
texts the last run left out, and pays nothing for what it stored. A text funded here is paid at
most once however often its bundle runs (``claims.py``), so a run is billed at most the funded
characters: never more than the cap, across workers, retries and replayed bundles.

Holds, on one worker, each language's misses' (rank, length) while sorting them, and every
language's text lengths as integers while allocating (8 bytes a text: 22 MB for M-CLIP's
2.76M texts).
"""

from __future__ import annotations

import itertools
from array import array
from typing import Callable, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from polycap.transforms.outputs import Constant
from polycap.transforms.records import Pair, Stage

FUNDED, OVER_BUDGET = "funded", "over_budget"
_NOTHING_FUNDED = ""  # smaller than every rank (sha256 hex digests)


class Allocated(NamedTuple):
    funded: beam.PCollection
    over_budget: beam.PCollection
    counts: beam.PCollection
    spent: beam.PCollection


def funded_counts(remaining: int, lengths: dict[str, Sequence[int]], languages: Sequence[str]) -> dict[str, int]:
    """How many texts of each language the cap funds: ``lengths[lang]`` are the characters of
    its texts in rank order; languages take turns in ``languages`` order until the next text
    would take the total over ``remaining``. -> {language: texts funded}."""
    funded = dict.fromkeys(languages, 0)
    longest = max((len(lengths.get(lang, ())) for lang in languages), default=0)
    for position, lang in itertools.product(range(longest), languages):
        texts = lengths.get(lang, ())
        if position >= len(texts):
            continue
        if texts[position] > remaining:
            return funded
        remaining -= texts[position]
        funded[lang] += 1
    return funded


def _budget_table(lengths: dict[str, Sequence[int]], funded: dict[str, int]) -> dict:
    table = {}
    for lang, n in funded.items():
        texts = lengths.get(lang, ())
        table[lang] = {
            "funded_texts": n,
            "funded_characters": int(sum(texts[:n])),
            "over_budget_texts": len(texts) - n,
            "over_budget_characters": int(sum(texts[n:])),
        }
    return table


class _SplitFn(beam.DoFn):
    """A miss goes on funded while its rank is within its language's cutoff."""

    def __init__(self, rank_of: Callable[[Pair], str]):
        self._rank_of = rank_of

    def process(self, miss, cutoffs):
        _, pairs = miss
        cutoff = cutoffs.get(pairs[0].target_lang)
        if cutoff is None or min(self._rank_of(pair) for pair in pairs) <= cutoff:
            yield miss
        else:
            Metrics.counter(Stage.TRANSLATE.value, "over_budget_texts").inc()
            yield beam.pvalue.TaggedOutput(OVER_BUDGET, miss)


class AllocateBudget(beam.PTransform):
    """See the module docstring. ``rank_of(pair)``: the pair's sample rank; ``spent_before``:
    a singleton PCollection of characters funded earlier in this run (quota fill's earlier
    rounds), or None."""

    def __init__(self, max_characters: int, languages: Sequence[str], rank_of: Callable[[Pair], str],
                 spent_before: Optional[beam.PCollection] = None):
        super().__init__()
        self._max = max_characters
        self._languages = tuple(languages)
        self._rank_of = rank_of
        self._spent_before = spent_before

    def expand(self, misses):
        rank_of, languages, cap = self._rank_of, self._languages, self._max
        spent_before = self._spent_before
        if spent_before is None:
            spent_before = misses.pipeline | "NothingSpentBefore" >> Constant([0])
        ranked = (
            misses
            | "RankLength" >> beam.Map(
                lambda miss: (miss[1][0].target_lang,
                              (min(rank_of(pair) for pair in miss[1]), len(miss[1][0].source_text)))
            )
            | "PerLanguage" >> beam.GroupByKey()
            | "InRankOrder" >> beam.MapTuple(lambda lang, entries: (lang, sorted(entries)))
        )

        def allocate(lengths_by_language, spent):
            lengths = dict(lengths_by_language)
            funded = funded_counts(max(cap - spent, 0), lengths, languages)
            table = _budget_table(lengths, funded)
            return {"funded": funded, "table": table,
                    "spent": spent + sum(numbers["funded_characters"] for numbers in table.values())}

        allocation = (
            ranked
            | "Lengths" >> beam.MapTuple(lambda lang, entries: (lang, array("q", (n for _, n in entries))))
            | "AllLengths" >> beam.combiners.ToList()
            | "Allocate" >> beam.Map(allocate, beam.pvalue.AsSingleton(spent_before))
        )

        def cutoff(lang, entries, allocated=None):
            n = allocated["funded"].get(lang, 0)
            return lang, None if n == len(entries) else (entries[n - 1][0] if n else _NOTHING_FUNDED)

        cutoffs = ranked | "Cutoffs" >> beam.MapTuple(cutoff, beam.pvalue.AsSingleton(allocation))
        split = misses | "Split" >> beam.ParDo(_SplitFn(rank_of), beam.pvalue.AsDict(cutoffs)).with_outputs(
            OVER_BUDGET, main=FUNDED
        )
        return Allocated(
            funded=split[FUNDED],
            over_budget=split[OVER_BUDGET],
            counts=allocation | "BudgetTable" >> beam.Map(lambda allocated: ("budget", allocated["table"])),
            spent=allocation | "Spent" >> beam.Map(lambda allocated: allocated["spent"]),
        )
