"""Translate sampled captions: the translation memory, then the translation store, then the
configured online provider, each distinct text once.

Pairs, memory entries and store rows meet on ``lookup_key = source_lang, target_lang,
match_key(text)`` in one CoGroupByKey, so each distinct text is looked up once however many
captions share it, and neither the memory nor the store has to fit one worker. Several memory
translations of one text: the smallest string wins, so the choice is deterministic. Texts found
nowhere ("misses") are spread over ``PROVIDER_BUCKETS`` groups by a hash of their key and sent
to the provider in batches of ``translation.batch_size``, several batches at once; each batch is
written to the store before its translations go on (see ``store.py``).

Out: translated Pairs (``provider`` = ``memory`` or the online provider); rejected
``untranslated`` (the provider echoed the source or answered in another language); failed
``no_translation`` (no provider configured could translate it), ``provider_unavailable``
(retries exhausted), ``provider_refused`` (the provider refused the text). ``lookups`` counts,
per distinct text, where it was found: the dry run's estimate and the audit's translation table.
"""

from __future__ import annotations

import collections
import enum
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from polycap.pipeline.config import OnlineProvider, TranslationConfig
from polycap.transforms import store
from polycap.transforms.clean import match_key
from polycap.transforms.outputs import FAILED, REJECTED, StageOutput
from polycap.transforms.providers import make_provider
from polycap.transforms.providers.base import ErrorKind, Request
from polycap.transforms.records import Failed, Pair, Rejected, Stage, fail, reject

MEMORY_PROVIDER = "memory"
PROVIDER_BUCKETS = 64
MISSES = "misses"
LOOKUPS = "lookups"


class Reason(str, enum.Enum):
    NO_TRANSLATION = "no_translation"
    UNTRANSLATED = "untranslated"
    PROVIDER_UNAVAILABLE = ErrorKind.UNAVAILABLE.value
    PROVIDER_REFUSED = ErrorKind.REFUSED.value


class Found(str, enum.Enum):
    MEMORY = "memory"
    STORE = "store"
    MISS = "miss"


class Lookup(NamedTuple):
    """Where one distinct text was found for one target language, and its length."""

    target_lang: str
    found: str
    characters: int


def lookup_key(source_lang: str, target_lang: str, text: str) -> str:
    return f"{source_lang}\t{target_lang}\t{match_key(text)}"


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big") % PROVIDER_BUCKETS


class _LookUpFn(beam.DoFn):
    """(key, {pairs, memory, store}) -> translated pairs, rejected untranslated, misses, lookups."""

    def __init__(self, provider: str):
        self._provider = provider

    def process(self, joined):
        key, grouped = joined
        pairs = list(grouped["pairs"])
        if not pairs:
            return
        first = pairs[0]
        memory, stored = list(grouped["memory"]), list(grouped["store"])
        if memory:
            found, translation, untranslated, provider = Found.MEMORY, min(memory), False, MEMORY_PROVIDER
        elif stored:
            (translation, untranslated), provider = min(stored), self._provider
            found = Found.STORE
        else:
            Metrics.counter(Stage.TRANSLATE.value, "misses").inc()
            yield beam.pvalue.TaggedOutput(LOOKUPS, Lookup(first.target_lang, Found.MISS.value, len(first.source_text)))
            yield beam.pvalue.TaggedOutput(MISSES, (key, pairs))
            return
        Metrics.counter(Stage.TRANSLATE.value, f"{found.value}_hits").inc()
        yield beam.pvalue.TaggedOutput(LOOKUPS, Lookup(first.target_lang, found.value, len(first.source_text)))
        yield from _translated(pairs, translation, provider, untranslated)


def _translated(pairs, translation: str, provider: str, untranslated: bool):
    for pair in pairs:
        done = pair._replace(translated_text=translation, provider=provider)
        if untranslated:
            yield beam.pvalue.TaggedOutput(REJECTED, reject(done, Stage.TRANSLATE, Reason.UNTRANSLATED))
        else:
            yield done


class _NoProviderFn(beam.DoFn):
    def process(self, miss):
        _, pairs = miss
        for pair in pairs:
            Metrics.counter(Stage.TRANSLATE.value, Reason.NO_TRANSLATION.value).inc()
            yield fail(pair, Stage.TRANSLATE, Reason.NO_TRANSLATION,
                       f"no translation into {pair.target_lang} in the memory or the store, "
                       "and no online provider configured")


class _ProviderFn(beam.DoFn):
    """(bucket, [(key, pairs)]) -> translated pairs; rejected untranslated; failed with the
    provider's error. Each batch goes to the store before anything of it is emitted.

    Batches overlap: up to ``max_concurrency`` of them are sent at once on a thread pool, so
    while one waits for its slowest answer or its store write, the others keep the provider's
    ``max_concurrency`` requests busy. Results leave in the order the batches were sent, at the
    latest in ``finish_bundle``; counting happens on the bundle's thread (Beam metrics are
    per thread)."""

    def __init__(self, cfg: TranslationConfig, store_root: str, run_id: str):
        self._cfg = cfg
        self._store_root = store_root
        self._run_id = run_id
        self._billed = Metrics.counter(Stage.TRANSLATE.value, "billed_characters")

    def setup(self):
        self._provider = make_provider(self._cfg).__enter__()
        self._senders = ThreadPoolExecutor(self._provider.max_concurrency, thread_name_prefix="translate-batch")

    def teardown(self):
        self._senders.shutdown(wait=True)
        self._provider.__exit__(None, None, None)

    def start_bundle(self):
        self._in_flight = collections.deque()  # (misses, future of _send, window, timestamp)

    def process(self, bucket, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        _, misses = bucket
        misses = sorted(misses, key=lambda miss: miss[0])
        for start in range(0, len(misses), self._cfg.batch_size):
            batch = misses[start : start + self._cfg.batch_size]
            self._in_flight.append((batch, self._senders.submit(self._send, batch), window, timestamp))
        while self._in_flight and (
            len(self._in_flight) > self._provider.max_concurrency or self._in_flight[0][1].done()
        ):
            yield from self._emit_oldest()

    def finish_bundle(self):
        while self._in_flight:
            yield from self._emit_oldest()

    def _emit_oldest(self):
        misses, sent, window, timestamp = self._in_flight.popleft()
        rows, errors, paid_characters = sent.result()
        self._billed.inc(paid_characters)
        for output in self._outputs(misses, rows, errors):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(output.tag, WindowedValue(output.value, timestamp, [window]))
            else:
                yield WindowedValue(output, timestamp, [window])

    def _send(self, misses):
        """Runs on a sender thread: the batch's store rows (read back if a replayed bundle
        paid for it already, else translated and written), the errors of the rest, and the
        characters this call paid for."""
        name = self._provider.name
        path = store.batch_path(self._store_root, name, [key for key, _ in misses])
        if store.FileSystems.exists(path):
            return store.read_batch(path), {}, 0
        requests = [Request(p[0].source_lang, p[0].target_lang, p[0].source_text) for _, p in misses]
        outcomes = self._provider.translate(requests)
        rows, errors = [], {}
        for (key, pairs), request, outcome in zip(misses, requests, outcomes):
            if outcome.translation is None:
                errors[key] = outcome
                continue
            rows.append(
                dict(provider=name, lookup_key=key, source_lang=request.source_lang,
                     target_lang=request.target_lang, source_text=request.text,
                     translated_text=outcome.translation, untranslated=outcome.untranslated,
                     characters=len(request.text), run_id=self._run_id)
            )
        if rows:
            store.write_batch(path, rows)
        return rows, errors, sum(row["characters"] for row in rows)

    def _outputs(self, misses, rows, errors):
        name = self._provider.name
        stored = {row["lookup_key"]: row for row in rows}
        for key, pairs in misses:
            if key in stored:
                row = stored[key]
                yield from _translated(pairs, row["translated_text"], name, row["untranslated"])
                continue
            outcome = errors.get(key)
            reason = Reason(outcome.error_kind.value) if outcome else Reason.PROVIDER_UNAVAILABLE
            error = outcome.error if outcome else "failed in an earlier attempt of this batch"
            for pair in pairs:
                Metrics.counter(Stage.TRANSLATE.value, reason.value).inc()
                yield beam.pvalue.TaggedOutput(FAILED, fail(pair, Stage.TRANSLATE, reason, error))


class TranslateCaptions(beam.PTransform):
    """PCollection[Pair] (untranslated) -> TranslateOutput(kept=translated Pairs,
    rejected=Rejected ``untranslated``, failed=Failed (see the module), lookups=PCollection[Lookup],
    misses=PCollection[(lookup_key, [Pair])] that went to the provider).

    ``memory``: PCollection[MemoryEntry]; ``store_root``: the translation store's URI;
    ``run_id`` marks the store rows this run paid for; ``dry_run`` stops before any provider call.
    """

    def __init__(self, cfg: TranslationConfig, memory: beam.PCollection, store_root: str,
                 run_id: str, dry_run: bool = False):
        super().__init__()
        self._cfg = cfg
        self._memory = memory
        self._store_root = store_root
        self._run_id = run_id
        self._dry_run = dry_run

    def expand(self, pairs):
        provider = self._cfg.provider.value
        keyed_pairs = pairs | "KeyPairs" >> beam.Map(
            lambda pair: (lookup_key(pair.source_lang, pair.target_lang, pair.source_text), pair)
        ).with_output_types(Tuple[str, Pair])
        keyed_memory = self._memory | "KeyMemory" >> beam.Map(
            lambda entry: (lookup_key(entry.source_lang, entry.target_lang, entry.source_text),
                           entry.translated_text)
        ).with_output_types(Tuple[str, str])
        if self._cfg.provider is OnlineProvider.NONE:
            stored = pairs.pipeline | "NoStore" >> beam.Create([])
        else:
            stored = pairs.pipeline | "ReadStore" >> store.ReadStore(self._store_root, provider)
        looked_up = (
            {"pairs": keyed_pairs, "memory": keyed_memory, "store": stored}
            | "Join" >> beam.CoGroupByKey()
            | "LookUp" >> beam.ParDo(_LookUpFn(provider)).with_outputs(REJECTED, MISSES, LOOKUPS, main="kept")
        )
        translated, rejected, failed = [looked_up.kept], [looked_up[REJECTED]], []
        misses = looked_up[MISSES]
        if self._dry_run:
            pass  # a dry run only counts the misses; nothing is called, nothing is written
        elif self._cfg.provider is OnlineProvider.NONE:
            failed.append(misses | "NoProvider" >> beam.ParDo(_NoProviderFn()))
        else:
            called = (
                misses
                | "Bucket" >> beam.Map(lambda miss: (_bucket(miss[0]), miss))
                | "GroupBuckets" >> beam.GroupByKey()
                | "CallProvider"
                >> beam.ParDo(_ProviderFn(self._cfg, self._store_root, self._run_id)).with_outputs(
                    REJECTED, FAILED, main="kept"
                )
            )
            translated.append(called.kept)
            rejected.append(called[REJECTED])
            failed.append(called[FAILED])
        flatten = lambda label, parts, kind: parts | label >> beam.Flatten(
            pipeline=pairs.pipeline
        ).with_output_types(kind)
        return TranslateOutput(
            kept=flatten("AllTranslated", translated, Pair),
            rejected=flatten("AllUntranslated", rejected, Rejected),
            failed=flatten("AllFailed", failed, Failed),
            lookups=looked_up[LOOKUPS],
            misses=misses,
        )


class TranslateOutput(NamedTuple):
    kept: beam.PCollection
    rejected: Optional[beam.PCollection]
    failed: Optional[beam.PCollection]
    lookups: beam.PCollection
    misses: beam.PCollection
