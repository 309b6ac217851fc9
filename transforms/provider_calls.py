"""Send the texts no memory or store holds to the online provider, each distinct text once, and
write every paid batch to the translation store before anything of it goes on.

PCollection[(lookup_key, [Pair])] (the misses) -> PCollection[Answered], one per miss.

Misses are spread over ``PROVIDER_BUCKETS`` groups by a hash of their key; each group's keys are
sorted and cut into fixed batches of ``batch_size``, so a replayed bundle forms the same batches,
finds their store files and reads them instead of paying again (``store.py``).

Batches overlap: up to ``max_concurrency`` of them are sent at once on a thread pool, so while one
waits for its slowest answer or its store write, the others keep the provider's
``max_concurrency`` requests busy. Answers leave in the order the batches were sent, at the latest
in ``finish_bundle`` (hence the explicit ``WindowedValue``: an element emitted there needs the
window and timestamp of the element that brought it); counting happens on the bundle's thread
(Beam metrics are per thread).
"""

from __future__ import annotations

import collections
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from polycap.transforms import store
from polycap.transforms.providers.base import ErrorKind, Provider, Request
from polycap.transforms.records import Stage

PROVIDER_BUCKETS = 64


class Answered(NamedTuple):
    """The provider's answer for one distinct text and the pairs waiting for it: a translation
    (``untranslated`` when the provider echoed it or answered in another language), or the kind
    and text of the error that prevented it."""

    lookup_key: str
    pairs: list
    translation: Optional[str]
    untranslated: bool = False
    error_kind: Optional[ErrorKind] = None
    error: Optional[str] = None


def bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big") % PROVIDER_BUCKETS


class _CallProviderFn(beam.DoFn):
    """(bucket, [(lookup_key, pairs)]) -> Answered per miss. See the module docstring."""

    def __init__(self, provider: Provider, batch_size: int, store_root: str, run_id: str):
        self._provider = provider
        self._batch_size = batch_size
        self._store_root = store_root
        self._run_id = run_id
        self._billed = Metrics.counter(Stage.TRANSLATE.value, "billed_characters")

    def setup(self):
        self._client = self._provider.__enter__()
        self._senders = ThreadPoolExecutor(
            self._client.max_concurrency, thread_name_prefix="translate-batch"
        )

    def teardown(self):
        self._senders.shutdown(wait=True)
        self._client.__exit__(None, None, None)

    def start_bundle(self):
        self._in_flight = collections.deque()  # (future of _send, window, timestamp)

    def process(self, grouped, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        _, misses = grouped
        misses = sorted(misses, key=lambda miss: miss[0])
        for start in range(0, len(misses), self._batch_size):
            batch = misses[start : start + self._batch_size]
            self._in_flight.append((self._senders.submit(self._send, batch), window, timestamp))
        while self._in_flight and (
            len(self._in_flight) > self._client.max_concurrency or self._in_flight[0][0].done()
        ):
            yield from self._emit_oldest()

    def finish_bundle(self):
        while self._in_flight:
            yield from self._emit_oldest()

    def _emit_oldest(self):
        sent, window, timestamp = self._in_flight.popleft()
        answers, paid_characters = sent.result()
        self._billed.inc(paid_characters)
        for answer in answers:
            yield WindowedValue(answer, timestamp, [window])

    def _send(self, misses) -> tuple[list[Answered], int]:
        """Runs on a sender thread: the batch's answers (read back from the store if an earlier
        attempt paid for it already, else translated and written) and the characters paid."""
        name = self._client.name
        path = store.batch_path(self._store_root, name, [key for key, _ in misses])
        if FileSystems.exists(path):
            stored = {store.row_key(row): row for row in store.read_batch(path)}
            return [_from_store(key, pairs, stored.get(key)) for key, pairs in misses], 0
        requests = [Request(p[0].source_lang, p[0].target_lang, p[0].source_text) for _, p in misses]
        replies = self._client.translate(requests)
        answers, rows = [], []
        for (key, pairs), request, reply in zip(misses, requests, replies, strict=True):
            answers.append(Answered(key, pairs, reply.translation, reply.untranslated,
                                    reply.error_kind, reply.error))
            if reply.translation is not None:
                rows.append(
                    dict(provider=name, lookup_key=key, source_lang=request.source_lang,
                         target_lang=request.target_lang, source_text=request.text,
                         translated_text=reply.translation, untranslated=reply.untranslated,
                         characters=len(request.text), run_id=self._run_id)
                )
        if rows:
            store.write_batch(path, rows)
        return answers, sum(row["characters"] for row in rows)


def _from_store(key: str, pairs: list, row: Optional[dict]) -> Answered:
    if row is None:  # the earlier attempt got an error for this text and stored nothing of it
        return Answered(key, pairs, None, error_kind=ErrorKind.UNAVAILABLE,
                        error="failed in an earlier attempt of this batch")
    return Answered(key, pairs, row["translated_text"], row["untranslated"])


class CallProvider(beam.PTransform):
    """PCollection[(lookup_key, [Pair])] -> PCollection[Answered]. ``provider`` is not opened
    yet (it pickles to the workers and opens once per DoFn instance); ``run_id`` marks the store
    rows this run paid for."""

    def __init__(self, provider: Provider, batch_size: int, store_root: str, run_id: str):
        super().__init__()
        self._call = _CallProviderFn(provider, batch_size, store_root, run_id)

    def expand(self, misses):
        return (
            misses
            | "Bucket" >> beam.Map(lambda miss: (bucket(miss[0]), miss))
            | "GroupBuckets" >> beam.GroupByKey()
            | "Send" >> beam.ParDo(self._call)
        )
