"""Translate sampled captions: the translation memory, then the translation store, then the
language's online provider (``translation.provider``, or ``translation.providers`` per
language), each distinct text once.

Pairs, memory entries and store rows meet on ``lookup_key = source_lang, target_lang,
match_key(text)`` in one GroupByKey (each side's values have a type of their own, so they need
none of a CoGroupByKey's tags and the steps that add and sort them), so each distinct text is
looked up once however many captions share it, and neither the memory nor the store has to fit
one worker. Only the memory
entries and store rows whose key may be a pair's (a Bloom filter of the pairs' keys,
``key_filter.py``) go into the join, so a memory or store much larger than the sample is read
but not shuffled or held; the join's result is the same. Several memory
translations of one text: the smallest string wins, so the choice is deterministic. Texts found
nowhere ("misses") go to their language's provider (``provider_calls.py``, one step per
provider), which writes every translated batch to the store before its translations go on. The
store keeps each provider's translations apart (``Provider.store_names``: one folder per
provider, per language and model for a local model); only providers that bill characters
share the spending cap.

PCollection[Pair] -> StageOutput:
- ``kept``: translated Pairs (``provider`` = ``memory`` or the language's online provider);
- ``rejected``: ``untranslated`` (the provider echoed the source or answered in another language);
- ``failed``: ``no_translation`` (no provider configured could translate it),
  ``provider_unavailable`` (retries exhausted), ``provider_refused`` (the provider refused it),
  ``over_budget`` (``max_characters`` left it out: ``budget.py``);
- ``counts``: ``("translation", {language: {memory, store, miss, miss_characters}})``: per
  distinct text, where it was found; the dry run's estimate and the audit's translation table;
  with ``max_characters``, also ``("budget", ...)`` (``budget.py``).
"""

from __future__ import annotations

import enum
import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from pydantic import Field

from polycap.transforms import progress, store
from polycap.transforms.budget import AllocateBudget
from polycap.transforms.key_filter import key_filter, may_contain
from polycap.transforms.store import lookup_key
from polycap.transforms.memory import MemoryConfig
from polycap.transforms.outputs import FAILED, KEPT, REJECTED, Constant, StageOutput, sum_counts
from polycap.transforms.provider_calls import Answered, CallProvider
from polycap.transforms.providers import LIST_PRICES, OnlineProvider, make_provider
from polycap.transforms.providers.aws import AwsConfig
from polycap.transforms.providers.base import ErrorKind
from polycap.transforms.providers.ctranslate2 import Ctranslate2Config
from polycap.transforms.providers.google import GoogleConfig
from polycap.transforms.providers.google_cloud import GoogleCloudConfig
from polycap.transforms.records import Failed, Pair, Rejected, Stage, fail, reject
from polycap.transforms.section import Section
from polycap.transforms.text import sent_text

MEMORY_PROVIDER = "memory"
MISSES = "misses"
LOOKUPS = "lookups"
_LOOKUP_TABLE = "translation"  # the look-ups' table's name in audit/counts.json


class TranslationConfig(Section):
    memory: tuple[MemoryConfig, ...] = ()
    # Every target language's provider, unless ``providers`` names another for it.
    provider: OnlineProvider = OnlineProvider.NONE
    # A provider per target language instead of ``provider``, so one run mixes local models
    # and paid APIs: {de: ctranslate2, fr: aws}. Its keys are languages of the run (config.py).
    providers: dict[str, OnlineProvider] = {}
    # URI of the persistent translation store; None means OUTPUT/translations. Read and written
    # only for languages with an online provider: the memory needs no store.
    store: Optional[str] = None
    # The price of every provider that bills characters; None: each one's list price.
    price_per_million_chars: Optional[float] = Field(default=None, ge=0)
    # Distinct texts per provider call batch (and per store file).
    batch_size: int = Field(default=100, ge=1, le=10_000)
    # How long a claim on a text (claims.py) holds before another payer may take it over: longer
    # than a batch can take to translate and store, retries included.
    claim_lease_seconds: float = Field(default=600.0, gt=0)
    # The spending cap: characters this run may send to providers that bill (budget.py); null:
    # no cap. A local model's characters cost nothing and never count.
    max_characters: Optional[int] = Field(default=None, ge=0)
    aws: AwsConfig = AwsConfig()
    google: GoogleConfig = GoogleConfig()
    google_cloud: GoogleCloudConfig = GoogleCloudConfig()
    # Required where a language uses ctranslate2: which models (no default can name one).
    ctranslate2: Optional[Ctranslate2Config] = None

    def provider_for(self, lang: str) -> OnlineProvider:
        return self.providers.get(lang, self.provider)

    def languages_by_provider(self, languages: Sequence[str]) -> dict[OnlineProvider, tuple[str, ...]]:
        """The online providers (not ``none``) that ``languages`` use, each with its languages
        in ``languages`` order."""
        by_provider: dict[OnlineProvider, tuple[str, ...]] = {}
        for lang in languages:
            provider = self.provider_for(lang)
            if provider is not OnlineProvider.NONE:
                by_provider[provider] = (*by_provider.get(provider, ()), lang)
        return by_provider

    def price_of(self, provider: OnlineProvider) -> float:
        """USD per million characters ``provider`` bills; 0 for one that bills none."""
        if not provider.bills:
            return 0.0
        if self.price_per_million_chars is not None:
            return self.price_per_million_chars
        return LIST_PRICES[provider]


class Reason(str, enum.Enum):
    NO_TRANSLATION = "no_translation"
    UNTRANSLATED = "untranslated"
    PROVIDER_UNAVAILABLE = ErrorKind.UNAVAILABLE.value
    PROVIDER_REFUSED = ErrorKind.REFUSED.value
    OVER_BUDGET = "over_budget"


class Found(str, enum.Enum):
    MEMORY = "memory"
    STORE = "store"
    MISS = "miss"


# The translate stage's counter of each kind of look-up.
_LOOKUP_COUNTERS = {Found.MEMORY: "memory_hits", Found.STORE: "store_hits", Found.MISS: "misses"}


class Lookup(NamedTuple):
    """Where one distinct text was found for one target language, and its length."""

    target_lang: str
    found: str
    characters: int


def _translated(pairs, translation: str, provider: str, untranslated: bool):
    """Every pair of one text with its translation; rejected ``untranslated`` where it is none."""
    progress.advance("translated", len(pairs))
    for pair in pairs:
        done = pair._replace(translated_text=translation, provider=provider,
                             sent_text=None if provider == MEMORY_PROVIDER else sent_text(pair.source_text))
        if untranslated:
            Metrics.counter(Stage.TRANSLATE.value, Reason.UNTRANSLATED.value).inc()
            yield beam.pvalue.TaggedOutput(REJECTED, reject(done, Stage.TRANSLATE, Reason.UNTRANSLATED))
        else:
            yield done


def _failed(pairs, reason: Reason, error: str):
    for pair in pairs:
        Metrics.counter(Stage.TRANSLATE.value, reason.value).inc()
        yield beam.pvalue.TaggedOutput(FAILED, fail(pair, Stage.TRANSLATE, reason, error))


def pair_key(pair: Pair) -> str:
    """The key a pair is looked up under, and the key filter's (``pair_keys``) entry for it."""
    return lookup_key(pair.source_lang, pair.target_lang, pair.source_text)


def needed_memory(memory: beam.PCollection, pair_keys, label: str = "KeyMemory") -> beam.PCollection:
    """PCollection[MemoryEntry] -> PCollection[(lookup key, translated text)]: the entries whose
    key may be a pair's. ``pair_keys``: the pairs' key filter (``key_filter.py``), a side input."""

    def needed(entry, pair_keys):
        key = lookup_key(entry.source_lang, entry.target_lang, entry.source_text)
        if may_contain(pair_keys, key):
            yield key, entry.translated_text

    return memory | label >> beam.FlatMap(needed, pair_keys).with_output_types(Tuple[str, str])


def _sides(values) -> tuple[list, list, list]:
    """A key's joined values as (Pairs, memory translations, store rows' (translation,
    untranslated)): each side's values have a type of their own, so the join needs no tags."""
    pairs, memory, stored = [], [], []
    for value in values:
        if isinstance(value, Pair):
            pairs.append(value)
        elif isinstance(value, str):
            memory.append(value)
        else:
            stored.append(value)
    return pairs, memory, stored


class _LookUpFn(beam.DoFn):
    """(key, [its Pairs, memory translations and store rows]) -> translated pairs, rejected
    untranslated, misses, lookups ((the table's name, Lookup)). ``providers``: each language's
    provider, the one a store hit of it is from. A run without an online provider joins no
    store."""

    def __init__(self, providers: dict[str, str]):
        self._providers = providers

    def process(self, joined):
        key, values = joined
        pairs, memory, stored = _sides(values)
        if not pairs:
            return
        first = pairs[0]
        if memory:
            found, translation, untranslated, provider = Found.MEMORY, min(memory), False, MEMORY_PROVIDER
        elif stored:
            (translation, untranslated), provider = min(stored), self._providers[first.target_lang]
            found = Found.STORE
        else:
            found = Found.MISS
        Metrics.counter(Stage.TRANSLATE.value, _LOOKUP_COUNTERS[found]).inc()
        lookup = Lookup(first.target_lang, found.value, len(first.source_text))
        yield beam.pvalue.TaggedOutput(LOOKUPS, (_LOOKUP_TABLE, lookup))
        if found is Found.MISS:
            yield beam.pvalue.TaggedOutput(MISSES, (key, pairs))
        else:
            yield from _translated(pairs, translation, provider, untranslated)


class _NoProviderFn(beam.DoFn):
    def process(self, miss):
        _, pairs = miss
        yield from _failed(
            pairs, Reason.NO_TRANSLATION,
            f"no translation into {pairs[0].target_lang} in the memory, and no online provider "
            "configured",
        )


class _OverBudgetFn(beam.DoFn):
    def __init__(self, max_characters: int):
        self._max = max_characters

    def process(self, miss):
        _, pairs = miss
        yield from _failed(
            pairs, Reason.OVER_BUDGET,
            f"translation.max_characters: {self._max:,} characters are funded before this text",
        )


class _ResolveFn(beam.DoFn):
    """Answered -> the pairs translated, rejected untranslated, or failed with the error."""

    def __init__(self, provider: str):
        self._provider = provider

    def process(self, answer: Answered):
        if answer.translation is not None:
            yield from _translated(answer.pairs, answer.translation, self._provider, answer.untranslated)
        else:
            yield from _failed(answer.pairs, Reason(answer.error_kind.value), answer.error)


class _LookupTable(beam.CombineFn):
    """``Lookup`` rows (and None, which only makes sure there is a table) -> {lang: {memory,
    store, miss, miss_characters}}: distinct texts per language by where they were found."""

    def create_accumulator(self):
        return {}

    def add_input(self, by_language, lookup):
        if lookup is not None:
            numbers = by_language.setdefault(
                lookup.target_lang, {"memory": 0, "store": 0, "miss": 0, "miss_characters": 0}
            )
            numbers[lookup.found] += 1
            if lookup.found == Found.MISS.value:
                numbers["miss_characters"] += lookup.characters
        return by_language

    def merge_accumulators(self, accumulators):
        return sum_counts(list(accumulators))

    def extract_output(self, by_language):
        return by_language


def _store_folders(clients: dict, online: dict) -> dict[str, str]:
    """Language -> the store folder of its provider's translations into it; called where the
    workers run (``Provider.store_names``: a local model's folder names its files)."""
    return {lang: folder for kind, client in clients.items()
            for lang, folder in client.store_names(online[kind]).items()}


def _by_provider(misses, kinds: list, names: dict[str, str], label: str) -> dict:
    """The misses of each of ``kinds`` (OnlineProviders): those of the languages ``names``
    gives it; one kind takes them all without a step."""
    if len(kinds) == 1:
        return {kinds[0]: misses}
    slots = {kind.value: slot for slot, kind in enumerate(kinds)}
    parts = misses | label >> beam.Partition(
        lambda miss, _: slots[names[miss[1][0].target_lang]], len(kinds)
    )
    return dict(zip(kinds, parts))


class TranslateCaptions(beam.PTransform):
    """PCollection[Pair] (untranslated) -> StageOutput (see the module docstring).

    ``memory``: PCollection[MemoryEntry]; ``store_root``: the translation store's URI;
    ``run_id`` marks the store rows this run paid for; ``languages``: the run's target
    languages, the only ones its pairs may have (each goes to its provider,
    ``cfg.provider_for``); ``dry_run`` stops before any provider call: only ``counts`` and the
    look-up's own rows come out.

    With ``max_characters``: ``rank_of(pair)`` (its sample rank) and, for a later round of a
    quota fill, ``spent_before`` (a singleton: the characters funded before); the languages of
    providers that bill share the cap in ``languages`` order; after ``expand``, ``self.spent`` is
    the singleton of characters funded up to and including this stage.

    The memory entries and store rows pass a filter of the pairs' keys before the join
    (``key_filter.py``): only those that can meet a pair are shuffled. ``pair_keys``: that filter
    as a side input, covering every key the pairs can have (quota fill: every candidate's, so
    that each round's memory step waits on the same early side input, not on the round before);
    None: built from the pairs, sized by ``pairs_expected`` (from the config). ``keyed_memory``:
    with ``pair_keys``, the memory's entries that pass it (``needed_memory``), keyed once for
    every stage that shares the filter (quota fill's rounds); ``memory`` is then None.
    """

    def __init__(self, cfg: TranslationConfig, memory: Optional[beam.PCollection], store_root: str,
                 run_id: str, languages: Sequence[str], dry_run: bool = False,
                 rank_of: Optional[Callable[[Pair], str]] = None,
                 spent_before: Optional[beam.PCollection] = None, pairs_expected: int = 0,
                 pair_keys=None, keyed_memory: Optional[beam.PCollection] = None):
        super().__init__()
        if (keyed_memory is None) == (memory is None) or (keyed_memory is not None and pair_keys is None):
            raise ValueError("TranslateCaptions takes memory, or keyed_memory with the pair_keys it passed")
        self._keyed_memory = keyed_memory
        self._pairs_expected = pairs_expected
        self._pair_keys = pair_keys
        if cfg.max_characters is not None and rank_of is None:
            raise ValueError("translation.max_characters needs the pairs' sample ranks (rank_of)")
        self._cfg = cfg
        self._memory = memory
        self._store_root = store_root
        self._run_id = run_id
        self._languages = tuple(languages)
        self._dry_run = dry_run
        self._rank_of = rank_of
        self._spent_before = spent_before
        self.spent: Optional[beam.PCollection] = None

    def expand(self, pairs):
        cfg = self._cfg
        online = cfg.languages_by_provider(self._languages)
        clients = {kind: make_provider(cfg, kind) for kind in online}
        keyed_pairs = pairs | "KeyPairs" >> beam.Map(
            lambda pair: (pair_key(pair), pair)
        ).with_output_types(Tuple[str, Pair])
        pair_keys = self._pair_keys or key_filter(keyed_pairs | "PairKeys" >> beam.Keys(), self._pairs_expected)
        keyed_memory = self._keyed_memory
        if keyed_memory is None:
            keyed_memory = needed_memory(self._memory, pair_keys)
        joined = [keyed_pairs, keyed_memory]
        if online:
            joined.append(
                pairs.pipeline
                | "ReadStore" >> store.ReadStore(self._store_root, functools.partial(_store_folders, clients, online))
                | "NeededStoreRows" >> beam.Filter(lambda row, pair_keys: may_contain(pair_keys, row[0]), pair_keys)
            )
        names = {lang: cfg.provider_for(lang).value for lang in self._languages}
        looked_up = (
            joined
            | "Meet" >> beam.Flatten().with_output_types(Tuple[str, Any])
            | "Join" >> beam.GroupByKey()
            # Any: what Beam would infer by reading the step's bytecode, 30 ms a step at every build.
            | "LookUp" >> beam.ParDo(_LookUpFn(names)).with_output_types(Any).with_outputs(
                REJECTED, MISSES, LOOKUPS, main=KEPT
            )
        )
        translated, rejected, failed = [looked_up[KEPT]], [looked_up[REJECTED]], []
        used = list(dict.fromkeys(cfg.provider_for(lang) for lang in self._languages))
        misses = _by_provider(looked_up[MISSES], used, names, "ByProvider")
        paid = [kind for kind in online if kind.bills]
        budget_counts = []
        if cfg.max_characters is not None and paid:
            paid_misses = [misses.pop(kind) for kind in paid]
            allocated = paid_misses | "PaidMisses" >> beam.Flatten() | "AllocateBudget" >> AllocateBudget(
                cfg.max_characters, [lang for lang in self._languages if cfg.provider_for(lang).bills],
                self._rank_of, self._spent_before,
            )
            misses.update(_by_provider(allocated.funded, paid, names, "FundedByProvider"))
            budget_counts, self.spent = [allocated.counts], allocated.spent
            if not self._dry_run:
                over = allocated.over_budget | "OverBudget" >> beam.ParDo(
                    _OverBudgetFn(cfg.max_characters)
                ).with_outputs(FAILED)
                failed.append(over[FAILED])
        if not self._dry_run:  # a dry run only counts the misses; nothing is called, nothing is written
            if OnlineProvider.NONE in misses:
                no_provider = misses.pop(OnlineProvider.NONE) | "NoProvider" >> beam.ParDo(
                    _NoProviderFn()
                ).with_output_types(Any).with_outputs(FAILED)  # Any: as for LookUp
                failed.append(no_provider[FAILED])
            for kind, its_misses in misses.items():
                answered = (
                    its_misses
                    | f"CallProvider[{kind.value}]" >> CallProvider(
                        clients[kind], online[kind], cfg.batch_size, self._store_root, self._run_id,
                        cfg.claim_lease_seconds, bills=kind.bills,
                    )
                    | f"Resolve[{kind.value}]" >> beam.ParDo(_ResolveFn(kind.value)).with_outputs(
                        REJECTED, FAILED, main=KEPT
                    )
                )
                translated.append(answered[KEPT])
                rejected.append(answered[REJECTED])
                failed.append(answered[FAILED])
        counts = (
            (
                looked_up[LOOKUPS],
                pairs.pipeline | "NoLookupYet" >> Constant([(_LOOKUP_TABLE, None)]),
            )
            | "Lookups" >> beam.Flatten()
            | "LookupTable" >> beam.CombinePerKey(_LookupTable())
        )
        if budget_counts:
            counts = (counts, *budget_counts) | "TranslationCounts" >> beam.Flatten()

        def flatten(label, parts, kind):
            return parts | label >> beam.Flatten(pipeline=pairs.pipeline).with_output_types(kind)

        return StageOutput(
            kept=flatten("AllTranslated", translated, Pair),
            rejected=flatten("AllUntranslated", rejected, Rejected),
            failed=flatten("AllFailed", failed, Failed),
            counts=counts,
        )
