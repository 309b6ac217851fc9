"""The persistent translation store: every translation an online provider made, so that a
(text, source, target, provider) pair is paid for at most once, across reruns and retries.

Layout: ``STORE/<provider>/batch-<hash>-<owner>.parquet``, one file per provider batch, named by
a hash of the batch's lookup keys and its owner (``claims.py``); ``<provider>`` is the
provider's store folder for the batch's language (``Provider.store_names``). A batch's file is written (temporary name, then rename) as soon as
its translations come back, before they go downstream. So a job killed midway loses at most
the batches in flight, and a bundle Beam replays finds its batch file and reads it instead of
calling the provider again. Each run reads every file under the store once, at its start.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import uuid
from typing import Callable, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from polycap.transforms.outputs import Constant
from polycap.transforms.text import match_key

STORE_SCHEMA = pa.schema(
    [
        ("provider", pa.string()),
        ("lookup_key", pa.string()),
        ("source_lang", pa.string()),
        ("target_lang", pa.string()),
        ("source_text", pa.string()),
        ("translated_text", pa.string()),
        ("untranslated", pa.bool_()),
        ("characters", pa.int64()),
        ("run_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


def lookup_key(source_lang: str, target_lang: str, text: str) -> str:
    """The key under which a sampled pair, a memory entry and a store row of the same text meet.
    Computed from the text wherever it is needed, never read back from a file: a change to the
    normalisation (``text.match_key``) then re-keys what was paid for instead of orphaning it."""
    return f"{source_lang}\t{target_lang}\t{match_key(text)}"


def row_key(row: dict) -> str:
    """The lookup key of a store row, from its languages and source text."""
    return lookup_key(row["source_lang"], row["target_lang"], row["source_text"])


def store_root(configured: str | None, output: str) -> str:
    return (configured or f"{output.rstrip('/')}/translations").rstrip("/")


def store_pattern(root: str, provider: str) -> str:
    return f"{root}/{provider}/*.parquet"


def batch_path(root: str, provider: str, lookup_keys: Sequence[str], owner: str, part: int = 0) -> str:
    """The file one owner (``claims.Claims``) writes a batch's paid translations to: named by the
    batch's keys and the owner, so owners never overwrite each other's rows (nor their run ids,
    which bill each run), and an owner's later attempt at the same batch finds its own file."""
    digest = hashlib.sha256("\n".join(sorted(lookup_keys)).encode("utf-8")).hexdigest()[:32]
    suffix = f"-{part}" if part else ""
    return f"{root}/{provider}/batch-{digest}-{owner}{suffix}.parquet"


def read_batch(path: str) -> list[dict]:
    with FileSystems.open(path) as stream:
        return pq.read_table(io.BytesIO(stream.read())).to_pylist()


def write_batch(path: str, rows: list[dict]) -> None:
    """Write ``rows`` to ``path`` so that readers never see a partial file."""
    now = datetime.datetime.now(datetime.timezone.utc)
    table = pa.Table.from_pylist([{**row, "created_at": now} for row in rows], schema=STORE_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temporary) as stream:
        stream.write(buffer.getvalue())
    FileSystems.rename([temporary], [path])


def read_store_rows(root: str, provider: str, run_id: Optional[str] = None) -> list[dict]:
    """The rows of one store folder (``provider``; ``*``: every folder) on the driver: every
    row, or (``run_id``) only those of the batch files that run's owners wrote (``batch_path``:
    the owner starts with the run id), so a run's bill is read from its own files, not from
    every row the store ever held."""
    pattern = store_pattern(root, provider)
    if run_id is not None:
        pattern = f"{root}/{provider}/batch-*-{run_id}-*.parquet"
    matches = FileSystems.match([pattern])[0].metadata_list
    rows = [row for metadata in matches for row in read_batch(metadata.path)]
    return rows if run_id is None else [row for row in rows if row["run_id"] == run_id]


def _languages_by_folder(folders: dict[str, str]) -> list[tuple[str, frozenset]]:
    by_folder: dict[str, set] = {}
    for lang, folder in folders.items():
        by_folder.setdefault(folder, set()).add(lang)
    return [(folder, frozenset(langs)) for folder, langs in sorted(by_folder.items())]


def _files(root: str, folder: str, languages: frozenset) -> list[tuple[str, frozenset]]:
    return [(metadata.path, languages)
            for metadata in FileSystems.match([store_pattern(root, folder)])[0].metadata_list]


def _rows_of(path: str, languages: frozenset) -> list[dict]:
    return [row for row in read_batch(path) if row["target_lang"] in languages]


class ReadStore(beam.PTransform):
    """PBegin -> PCollection[(lookup_key, (translated_text, untranslated))]: each language's rows
    of its own folder, so the store keeps each provider's translations apart (a language that
    moves to another provider finds none of the old one's); the key computed from each row's text
    (``row_key``). ``folders()`` -> {language: folder}, called where the workers run
    (``Provider.store_names``: a local model's folder is a digest of its files, which the machine
    that launches the job may not have). The files are listed and read on the workers, one file at
    a time, spread over them by a GroupByKey on their paths."""

    def __init__(self, root: str, folders: Callable[[], dict[str, str]]):
        super().__init__()
        self._root = root
        self._folders = folders

    def expand(self, pbegin):
        root, folders = self._root, self._folders
        return (
            pbegin
            | "Store" >> Constant([None])
            | "StoreFolders" >> beam.FlatMap(lambda _: _languages_by_folder(folders()))
            | "MatchStoreFiles" >> beam.FlatMapTuple(lambda folder, languages: _files(root, folder, languages))
            # Grouped by path: spread over the workers as a Reshuffle would, in one step, not five.
            | "SpreadStoreFiles" >> beam.GroupByKey()
            | "ReadStoreFiles" >> beam.FlatMapTuple(
                lambda path, languages: _rows_of(path, frozenset().union(*languages))
            )
            | "KeyStoreRows"
            >> beam.Map(lambda row: (row_key(row), (row["translated_text"], row["untranslated"])))
        )
