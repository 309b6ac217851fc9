"""Quota fill (``sample.fill: true``): ``sample.per_language`` N is the number of *accepted* pairs.

The result is defined as a walk: go down a language's rank order (``sample.py``, the image cap
applied) and accept the first N captions that pass translation, scoring and keeping. It is
computed in rounds, unrolled in the pipeline graph (``sample.fill_rounds`` R of them), so the
work stays bounded and every round is an ordinary batch of the stages:

- ``RankedSample`` gives each language its first D = ``ceil(N * fill_max_draw)`` candidates
  once, in rank order (D entries per language on one worker, as sampling holds N).
- Round 1 draws positions [0, N). After a round, a language with A < N accepted out of the
  ``drawn`` so far draws the next ``ceil((N - A) * drawn / A)`` (its own acceptance rate so
  far; ``fill_max_draw`` per missing pair while A is 0), the last round a quarter more, so a
  language rarely ends short for want of rounds. A language stops drawing when it has N, its
  candidates are exhausted, it reached D, or the spending cap left a pair of it out.
- ``FillQuota`` then puts each language's accepted pairs in rank order: the first N are the
  result, the ones after are rejected ``beyond_quota`` (stage ``fill``): translated and paid
  for (the store keeps them), never dropped silently.

Because a round draws the positions right after the previous round's, what was drawn is a
prefix of the rank order, so the first N accepted of it are the walk's. Each round's size comes
from counts (accepted per language), not from timing or bundle order, so the same config gives
the same rounds and the same pairs on any runner and worker count. Pairs a round draws beyond
the walk's N-th accepted cost translation; sizing rounds by the acceptance so far keeps those
few (measured on the demo: ``benchmarks/README.md``).

``counts``: ``("fill", {language: {target, accepted, drawn, rounds, short_by, why_short}})``,
``why_short`` one of ``ShortBecause`` or None; ``("sampled", {language: drawn})``: the rounds'
windows added up (the audit checks it against the rows).
"""

from __future__ import annotations

import enum
import math
from typing import Any, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from polycap.transforms.outputs import KEPT, REJECTED, Constant, StageOutput
from polycap.transforms.records import Pair, Stage, reject
from polycap.transforms.sample import SampleConfig, languages_of, pair_rank
from polycap.transforms.translate import Reason as TranslateReason

_LAST_ROUND_MARGIN = 1.25


class Reason(str, enum.Enum):
    BEYOND_QUOTA = "beyond_quota"


class ShortBecause(str, enum.Enum):
    ELIGIBLE_EXHAUSTED = "eligible_exhausted"  # every candidate of the language was drawn
    DRAW_LIMIT = "draw_limit"  # ceil(N * fill_max_draw) captions drawn
    BUDGET = "budget"  # translation.max_characters left a pair of it out
    ROUNDS = "rounds"  # fill_rounds ran out


class LanguageState(NamedTuple):
    """Where one language's walk stands after a round."""

    drawn: int = 0
    accepted: int = 0
    rounds: int = 0  # rounds that drew at least one caption
    over_budget: bool = False


def next_window(state: LanguageState, available: int, cfg: SampleConfig, last_round: bool) -> tuple[int, int]:
    """The positions [start, stop) of the language's rank order the next round draws."""
    start, shortfall = state.drawn, cfg.per_language - state.accepted
    limit = min(available, cfg.drawn_at_most)
    if shortfall <= 0 or state.over_budget or start >= limit:
        return start, start
    if start == 0:
        return 0, min(cfg.per_language, limit)
    per_accepted = state.drawn / state.accepted if state.accepted else cfg.fill_max_draw
    wanted = shortfall * per_accepted * (_LAST_ROUND_MARGIN if last_round else 1.0)
    return start, min(start + math.ceil(wanted), limit)


def why_short(state: LanguageState, available: int, cfg: SampleConfig):
    if state.accepted >= cfg.per_language:
        return None
    if state.over_budget:
        return ShortBecause.BUDGET.value
    if state.drawn >= available:
        return ShortBecause.ELIGIBLE_EXHAUSTED.value
    if state.drawn >= cfg.drawn_at_most:
        return ShortBecause.DRAW_LIMIT.value
    return ShortBecause.ROUNDS.value


def _windows(states, available, cfg: SampleConfig, languages, last_round: bool) -> dict:
    return {
        lang: next_window(LanguageState(*states.get(lang, ())), available.get(lang, 0), cfg, last_round)
        for lang in languages
    }


class DrawRound(beam.PTransform):
    """PCollection[(sample key, [(rank, Caption)])] -> PCollection[Pair]: per language, the
    captions at the positions of its window. ``windows``: a singleton PCollection of
    {language: (start, stop)}."""

    def __init__(self, languages: Sequence[str], windows: beam.PCollection):
        super().__init__()
        self._languages = tuple(languages)
        self._windows = windows

    def expand(self, ranked):
        languages = self._languages

        def draw(keyed, windows):
            key, entries = keyed
            counter = Metrics.counter(Stage.SAMPLE.value, "sampled")
            for lang in languages_of(key, languages):
                start, stop = windows[lang]
                for _, caption in entries[start:stop]:
                    counter.inc()
                    yield Pair.for_language(caption, lang)

        return ranked | "Draw" >> beam.FlatMap(draw, beam.pvalue.AsSingleton(self._windows)).with_output_types(Pair)


class Rounds:
    """The driver-side bookkeeping of the rounds: each round's windows from the states so far.

    ``ranked``: the output of ``RankedSample(cfg, languages, cfg.drawn_at_most)``."""

    def __init__(self, cfg: SampleConfig, languages: Sequence[str], ranked: beam.PCollection):
        self._cfg = cfg
        self._languages = tuple(languages)
        self._ranked = ranked
        langs = self._languages
        self.available = ranked | "Available" >> beam.Map(
            lambda keyed: {lang: len(keyed[1]) for lang in languages_of(keyed[0], langs)}
        ) | "AllAvailable" >> beam.CombineGlobally(_merge_dicts).without_defaults()
        self.states = ranked.pipeline | "NoRoundYet" >> Constant([{}])

    def draw(self, round_number: int) -> tuple[beam.PCollection, beam.PCollection]:
        """(the round's Pairs, its windows)."""
        cfg, languages = self._cfg, self._languages
        last = round_number == cfg.fill_rounds
        windows = self.states | f"Windows[{round_number}]" >> beam.Map(
            lambda states, available: _windows(states, available, cfg, languages, last),
            _available(self.available),
        )
        # Round r's draw waits for round r-1's results; read behind a fusion break, or it would
        # sit in one stage with round 1's draw and wait on itself. ``ranked`` has one element per
        # sample key, so grouping it by key is that break at two primitives (Reshuffle: five).
        pairs = (
            self._ranked
            | f"Materialise[{round_number}]" >> beam.GroupByKey()
            | f"Unwrap[{round_number}]" >> beam.FlatMapTuple(lambda key, entries: ((key, e) for e in entries))
            | f"Draw[{round_number}]" >> DrawRound(languages, windows)
        )
        return pairs, windows

    def record(self, round_number: int, windows, accepted, failed) -> None:
        """Update the states with a round's windows, accepted Pairs and translate's Failed rows
        (those failed ``over_budget`` stop their language)."""
        over_budget = failed | f"OverBudget[{round_number}]" >> beam.Filter(
            lambda row: row.reason == TranslateReason.OVER_BUDGET.value
        )
        # Keyed by the round from the start, so one CombinePerKey counts them (CombineGlobally
        # would add a step to key them and one to drop the key).
        tally = (
            (
                accepted | f"AcceptedLanguage[{round_number}]" >> beam.Map(
                    lambda pair: (round_number, (pair.target_lang, "accepted"))),
                over_budget | f"OverBudgetLanguage[{round_number}]" >> beam.Map(
                    lambda row: (round_number, (row.target_lang, "over_budget"))),
            )
            | f"Tally[{round_number}]" >> beam.Flatten()
            | f"CountTally[{round_number}]" >> beam.CombinePerKey(_Tally())
        )

        def updated(counted, states, windows):
            new = {}
            for lang, (start, stop) in windows.items():
                old = LanguageState(*states.get(lang, ()))
                new[lang] = tuple(LanguageState(
                    drawn=stop,
                    accepted=old.accepted + counted.get((lang, "accepted"), 0),
                    rounds=old.rounds + (stop > start),
                    over_budget=old.over_budget or (lang, "over_budget") in counted,
                ))
            return new

        self.states = windows | f"States[{round_number}]" >> beam.Map(
            lambda windows, tallied, states: updated(tallied[1], states, windows),
            beam.pvalue.AsSingleton(tally, default_value=(round_number, {})), beam.pvalue.AsSingleton(self.states),
        )


class _Tally(beam.CombineFn):
    """Elements -> {element: how many times it came}, in one combine (a round's graph stays
    small: every transform costs pipeline construction and, on FnApiRunner, a bundle)."""

    def create_accumulator(self):
        return {}

    def add_input(self, counts, element):
        counts[element] = counts.get(element, 0) + 1
        return counts

    def merge_accumulators(self, accumulators):
        merged = {}
        for counts in accumulators:
            for element, n in counts.items():
                merged[element] = merged.get(element, 0) + n
        return merged

    def extract_output(self, counts):
        return counts


def _available(available: beam.PCollection):
    """``Rounds.available`` as a side input: {language: candidates}, {} when nothing is ranked."""
    return beam.pvalue.AsSingleton(available, default_value={})


def _merge_dicts(dicts):
    merged = {}
    for part in dicts:
        merged.update(part)
    return merged


class FillQuota(beam.PTransform):
    """PCollection[Pair] (accepted in any round) -> StageOutput(kept=the first N of each
    language in rank order, rejected=Rejected ``beyond_quota``, counts=("fill", ...)).
    ``rounds``: the ``Rounds`` after the last round was recorded."""

    def __init__(self, cfg: SampleConfig, languages: Sequence[str], rounds: Rounds):
        super().__init__()
        self._cfg = cfg
        self._languages = tuple(languages)
        self._rounds = rounds

    def expand(self, accepted):
        cfg = self._cfg

        def cut(lang_pairs):
            _, pairs = lang_pairs
            kept_counter = Metrics.counter(Stage.FILL.value, KEPT)
            beyond_counter = Metrics.counter(Stage.FILL.value, Reason.BEYOND_QUOTA.value)
            for position, pair in enumerate(sorted(pairs, key=lambda pair: pair_rank(cfg, pair))):
                if position < cfg.per_language:
                    kept_counter.inc()
                    yield pair
                else:
                    beyond_counter.inc()
                    yield beam.pvalue.TaggedOutput(REJECTED, reject(pair, Stage.FILL, Reason.BEYOND_QUOTA))

        cut_pairs = (
            accepted
            | "ByLanguage" >> beam.Map(lambda pair: (pair.target_lang, pair))
            | "GroupLanguage" >> beam.GroupByKey()
            # Any: what Beam would infer from cut's bytecode, which it would read at every build.
            | "FirstN" >> beam.FlatMap(cut).with_output_types(Any).with_outputs(REJECTED, main=KEPT)
        )
        languages = self._languages

        def table(states, available):
            numbers = {}
            for lang in languages:
                state = LanguageState(*states.get(lang, ()))
                numbers[lang] = {
                    "target": cfg.per_language,
                    "accepted": min(state.accepted, cfg.per_language),
                    "drawn": state.drawn,
                    "rounds": state.rounds,
                    "short_by": max(cfg.per_language - state.accepted, 0),
                    "why_short": why_short(state, available.get(lang, 0), cfg),
                }
            return "fill", numbers

        def sampled(states):
            return "sampled", {lang: LanguageState(*states.get(lang, ())).drawn for lang in languages}

        counts = (
            self._rounds.states | "FillTable" >> beam.Map(table, _available(self._rounds.available)),
            self._rounds.states | "Sampled" >> beam.Map(sampled),
        ) | "FillCounts" >> beam.Flatten()
        return StageOutput(kept=cut_pairs[KEPT], rejected=cut_pairs[REJECTED], counts=counts)
