"""Send the texts no memory or store holds to the online provider, each distinct text once, and
write every paid batch to the translation store before anything of it goes on.

PCollection[(lookup_key, [Pair])] (the misses) -> PCollection[Answered], one per miss.

Misses are spread over ``PROVIDER_BUCKETS`` groups by a hash of their key; each group's keys are
sorted and each language's cut into fixed batches of ``batch_size``, so a replayed bundle forms
the same batches, finds their store files and reads them instead of paying again (``store.py``).
A batch holds one target language: its store folder and its claims are that language's
(``Provider.store_names``).

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
import itertools
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from polycap.transforms import progress, store
from polycap.transforms.claims import Claim, Claims
from polycap.transforms.providers.base import ErrorKind, Provider, Request
from polycap.transforms.records import Stage
from polycap.transforms.text import text_for_mt

PROVIDER_BUCKETS = 64
_CLAIMS_AT_ONCE = 16
_POLL_FIRST_SECONDS, _POLL_MAX_SECONDS = 0.25, 10.0
_WRITE_ATTEMPTS = 5

log = logging.getLogger(__name__)


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

    def __init__(self, provider: Provider, languages: Sequence[str], batch_size: int,
                 store_root: str, run_id: str, lease_seconds: float, bills: bool):
        self._provider = provider
        self._languages = tuple(languages)
        self._batch_size = batch_size
        self._store_root = store_root
        self._run_id = run_id
        self._lease_seconds = lease_seconds
        self._bills = bills
        # A local model's characters are translated, not billed: they never count as spent.
        self._characters = Metrics.counter(
            Stage.TRANSLATE.value, "billed_characters" if bills else "local_characters"
        )

    def setup(self):
        self._client = self._provider.__enter__()
        self._senders = ThreadPoolExecutor(
            self._client.max_concurrency, thread_name_prefix="translate-batch"
        )
        # Claims are small round trips (a conditional PUT on S3): made several at once.
        self._claimers = ThreadPoolExecutor(_CLAIMS_AT_ONCE, thread_name_prefix="translate-claim")
        # One owner per DoFn instance: a retried work item on another worker is another owner.
        self._owner = f"{self._run_id}-{uuid.uuid4().hex[:12]}"
        self._folders = self._client.store_names(self._languages)
        self._claims = {lang: Claims(self._store_root, folder, self._owner, self._lease_seconds)
                        for lang, folder in self._folders.items()}

    def teardown(self):
        self._senders.shutdown(wait=True)
        self._claimers.shutdown(wait=True)
        self._client.__exit__(None, None, None)

    def start_bundle(self):
        self._in_flight = collections.deque()  # (future of _send, window, timestamp)

    def process(self, grouped, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        _, misses = grouped
        misses = sorted(misses, key=lambda miss: miss[0])  # the key starts with the languages
        for _, same_language in itertools.groupby(misses, key=lambda miss: miss[1][0].target_lang):
            same_language = list(same_language)
            for start in range(0, len(same_language), self._batch_size):
                batch = same_language[start : start + self._batch_size]
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
        answers, characters = sent.result()
        self._characters.inc(characters)
        if self._bills:
            progress.advance("billed characters", characters)
        for answer in answers:
            yield WindowedValue(answer, timestamp, [window])

    def _send(self, misses) -> tuple[list[Answered], int]:
        """Runs on a sender thread: the answers of a batch of one language and the characters
        this call paid for. Each text is claimed first; this owner pays for the texts it claimed
        (unless an earlier attempt of its own already stored them) and writes them to its batch
        file, then reads the others from their claimants' batch files, waiting while a claim is
        live and taking over one that expired or was released."""
        keys = [key for key, _ in misses]
        lang = misses[0][1][0].target_lang
        folder, claims = self._folders[lang], self._claims[lang]
        batch = store.batch_path(self._store_root, folder, keys, self._owner)
        claimed = list(self._claimers.map(lambda key: claims.claim(key, batch), keys))
        found = _BatchRows()
        stored = found.rows(batch)  # what an earlier attempt of this owner paid and stored
        answers, ours, theirs = {}, [], []
        for (key, pairs), (held, generation) in zip(misses, claimed, strict=True):
            row = stored.get(key) if held is None else None
            if row is not None:
                answers[key] = _from_row(key, pairs, row)
            elif held is None:
                ours.append((key, pairs, generation))
            else:
                theirs.append((key, pairs, held, generation))
        paid = self._pay(ours, claims, batch, answers)
        late = []  # texts whose claimant released them or whose claim expired: ours now
        late_batch = store.batch_path(self._store_root, folder, keys, self._owner, part=1)
        for key, pairs, held, generation in theirs:
            row, generation = self._await(key, claims, held, generation, late_batch, found)
            if row is not None:
                answers[key] = _from_row(key, pairs, row)
            else:
                late.append((key, pairs, generation))
        paid += self._pay(late, claims, late_batch, answers)
        return [answers[key] for key in keys], paid

    def _pay(self, owned, claims: Claims, batch: str, answers: dict) -> int:
        """Translate the texts this owner claimed, store them in ``batch`` (in the store folder
        of ``claims``) and release the claims of the ones that failed; -> the characters paid."""
        if not owned:
            return 0
        # A shouting caption goes in sentence case (text_for_mt); the store row keeps what was sent.
        requests = [Request(p[0].source_lang, p[0].target_lang, text_for_mt(p[0].source_text))
                    for _, p, _ in owned]
        replies = self._client.translate(requests)
        rows = []
        for (key, pairs, generation), request, reply in zip(owned, requests, replies, strict=True):
            answers[key] = Answered(key, pairs, reply.translation, reply.untranslated,
                                    reply.error_kind, reply.error)
            if reply.translation is None:
                claims.release(key, generation)
                continue
            rows.append(
                dict(provider=claims.provider, lookup_key=key, source_lang=request.source_lang,
                     target_lang=request.target_lang, source_text=request.text,
                     translated_text=reply.translation, untranslated=reply.untranslated,
                     characters=len(request.text), run_id=self._run_id)
            )
        if rows:
            _write_paid(batch, rows)
        return sum(row["characters"] for row in rows)

    def _await(self, key: str, claims: Claims, held: Claim, generation: int, batch: str,
               found: "_BatchRows"):
        """(the holder's store row, generation) once it is there, or (None, generation) once
        the text is this owner's to pay for: the holder released it, or its claim expired."""
        delay = _POLL_FIRST_SECONDS
        while held is not None:
            row = found.row(held.batch, key)
            if row is not None:
                return row, generation
            if held.expired():
                held, generation = claims.claim(key, batch, generation + 1)
            else:
                time.sleep(delay)
                delay = min(2 * delay, _POLL_MAX_SECONDS)
                held, generation = claims.claim(key, batch, generation)
        return None, generation


class _BatchRows:
    """Store rows by batch file and key; a file is read again while it lacks the key asked for
    (its owner may not have written it yet)."""

    def __init__(self):
        self._rows: dict[str, dict] = {}

    def rows(self, path: str) -> dict:
        """The rows of ``path`` by key, read now ({} while the file does not exist)."""
        if FileSystems.exists(path):
            self._rows[path] = {store.row_key(row): row for row in store.read_batch(path)}
        return self._rows.get(path, {})

    def row(self, path: str, key: str) -> Optional[dict]:
        """``key``'s row in ``path``: from the last read, or a new one if it lacked the key."""
        known = self._rows.get(path, {})
        return known[key] if key in known else self.rows(path).get(key)


def _write_paid(path: str, rows: list[dict]) -> None:
    """Store rows that were paid for, retried here before the bundle fails: a failed bundle would
    leave them paid but unstored, and their claims to expire before anyone pays again."""
    for attempt in range(1, _WRITE_ATTEMPTS + 1):
        try:
            store.write_batch(path, rows)
            return
        except Exception as error:  # each filesystem raises its own errors
            if attempt == _WRITE_ATTEMPTS:
                raise
            log.warning("storing %d paid translations in %s failed (%s); retrying", len(rows), path, error)
            time.sleep(2 ** attempt)


def _from_row(key: str, pairs: list, row: dict) -> Answered:
    return Answered(key, pairs, row["translated_text"], row["untranslated"])


class CallProvider(beam.PTransform):
    """PCollection[(lookup_key, [Pair])] -> PCollection[Answered]. ``provider`` is not opened
    yet (it pickles to the workers and opens once per DoFn instance) and translates into
    ``languages``, the only ones of the misses; ``run_id`` marks the store rows this run paid
    for; ``bills``: whether its characters are billed (counter ``billed_characters``) or
    translated on the workers (``local_characters``)."""

    def __init__(self, provider: Provider, languages: Sequence[str], batch_size: int,
                 store_root: str, run_id: str, lease_seconds: float, bills: bool):
        super().__init__()
        self._call = _CallProviderFn(provider, languages, batch_size, store_root, run_id,
                                     lease_seconds, bills)

    def expand(self, misses):
        return (
            misses
            | "Bucket" >> beam.Map(lambda miss: (bucket(miss[0]), miss))
            | "GroupBuckets" >> beam.GroupByKey()
            | "Send" >> beam.ParDo(self._call)
        )
