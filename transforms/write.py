"""Write the outcome of a run as Parquet shards with a fixed schema, and the run's counts.

Layout under the output root:
- ``accepted/lang=<code>/part-SSSSS-of-NNNNN.parquet``: ``ACCEPTED_SCHEMA``; every configured
  language gets its shards, a language with no rows gets 0-row files with the schema;
- ``rejected/part-*.parquet``: ``REJECTED_SCHEMA`` (accepted columns where known + stage, reason);
- ``failed/part-*.parquet``: ``FAILED_SCHEMA`` (+ stage, reason, error);
- ``audit/counts.json``: what the pipeline counted where rows do not reach the files (captions
  read, captions eligible for sampling, captions sampled per language). The audit checks the
  Parquet row counts against it.

Each shard is written whole under a temporary name and renamed (``WriteOutputs``), so readers
never see a partial file. ``lang`` stays out of the file columns (``target_lang`` carries it) so readers that merge hive
partitions with file columns do not clash.
"""

from __future__ import annotations

import json
import uuid
from typing import Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from pydantic import Field

from polycap.transforms.outputs import Constant, sum_counts
from polycap.transforms.records import Failed, Pair, Rejected
from polycap.transforms.section import Section
from polycap.transforms.text import stable_bucket


class OutputConfig(Section):
    # The output root; ``polycap run --output`` overrides it.
    path: Optional[str] = None
    # Pinned, so the file set does not depend on the runner or the worker count.
    num_shards: int = Field(default=1, ge=1)


ACCEPTED_SCHEMA = pa.schema(
    [
        ("caption_id", pa.string()),
        ("dataset", pa.string()),
        ("image_id", pa.string()),
        ("image_url", pa.string()),
        ("source_lang", pa.string()),
        ("target_lang", pa.string()),
        ("source_text", pa.string()),
        ("translated_text", pa.string()),
        ("sent_text", pa.string()),
        ("provider", pa.string()),
        ("similarity", pa.float64()),
        ("margin", pa.float64()),
        ("propn_ratio", pa.float64()),
    ]
)
REJECTED_SCHEMA = ACCEPTED_SCHEMA.append(pa.field("stage", pa.string())).append(
    pa.field("reason", pa.string())
)
FAILED_SCHEMA = REJECTED_SCHEMA.append(pa.field("error", pa.string()))

COUNTS_FILE = "audit/counts.json"
DRY_RUN_FILE = "dry_run/estimate.json"
# The folders a run owns under its output root (the translation store is not one of them).
RUN_OUTPUTS = ("accepted", "rejected", "failed", "audit")


def clear_run_outputs(root: str) -> int:
    """Delete everything under ``RUN_OUTPUTS`` below ``root``, so a rerun (with other shard
    counts, fewer languages) leaves no stale file for the audit to read; -> files deleted.

    On S3 and GCS a "folder" is only a key prefix: ``FileSystems.exists`` of it is False and
    deleting it removes at most one object, however many sit below. So every object under
    ``<root>/<folder>/`` is matched and deleted by name; a local folder is then removed too."""
    deleted = 0
    for name in RUN_OUTPUTS:
        folder = f"{root.rstrip('/')}/{name}"
        paths = [metadata.path for metadata in FileSystems.match([f"{folder}/**"])[0].metadata_list]
        if paths:
            FileSystems.delete(paths)
            deleted += len(paths)
        if FileSystems.exists(folder):  # a local directory, empty now
            FileSystems.delete([folder])
    return deleted


# Rows a Parquet row group holds: a shard is written as its group is read, a row group at a time.
ROW_GROUP_ROWS = 10_000
# Rows cross the grouping as their row coder's bytes: a local runner holds every shard's rows in
# memory until the writer reads them, as decoded values, which take about three times as much.
_ROW_CODERS = {kind: beam.coders.registry.get_coder(row_type)
               for kind, row_type in (("accepted", Pair), ("rejected", Rejected), ("failed", Failed))}


def _coder_of(folder: str):
    return _ROW_CODERS[folder.split("/", 1)[0]]


def shard_of(record, num_shards: int) -> int:
    """The shard a row goes to: from its caption id and language alone, so the files hold the
    same rows on any runner and worker count."""
    return stable_bucket(f"{record.caption_id}\x00{record.target_lang}", num_shards)


def shard_path(root: str, folder: str, shard: int, num_shards: int) -> str:
    return f"{root}/{folder}/part-{shard:05d}-of-{num_shards:05d}.parquet"


class _WriteShardFn(beam.DoFn):
    """((folder, shard), encoded rows) -> the shard's Parquet file, with ``schemas[folder]``; empty
    rows (every shard gets one, so an empty shard is a 0-row file with the schema) are skipped. The
    rows are written a row group at a time to a temporary name, renamed when whole: readers never
    see a partial file, and a retried shard writes its file again."""

    def __init__(self, root: str, num_shards: int, schemas: dict[str, pa.Schema]):
        self._root = root
        self._num_shards = num_shards
        self._schemas = schemas

    def process(self, shard_rows):
        (folder, shard), rows = shard_rows
        schema = self._schemas[folder]
        path = shard_path(self._root, folder, shard, self._num_shards)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        decode = _coder_of(folder).decode
        with FileSystems.create(temporary) as stream:
            with pq.ParquetWriter(stream, schema, compression="zstd") as writer:
                for group in _row_groups((decode(row) for row in rows if row), ROW_GROUP_ROWS):
                    columns = {name: [getattr(row, name) for row in group] for name in schema.names}
                    writer.write_table(pa.table(columns, schema=schema))
        FileSystems.rename([temporary], [path])


def _row_groups(rows, size: int):
    group = []
    for row in rows:
        group.append(row)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


class WriteOutputs(beam.PTransform):
    """(accepted Pairs, Rejected rows, Failed rows) -> Parquet shards under ``root``; a sink.
    Every row goes to a (folder, shard) by ``shard_of``, and one GroupByKey gathers every shard
    of every folder: a handful of Beam primitives whatever the number of languages (a Beam file
    sink per language took twelve each, 850 for M-CLIP's 69 languages)."""

    def __init__(self, root: str, languages: Sequence[str], num_shards: int):
        super().__init__()
        self._root = root.rstrip("/")
        self._languages = tuple(languages)
        self._num_shards = num_shards

    def expand(self, outcome):
        accepted, rejected, failed = outcome
        shards = self._num_shards
        schemas = {f"accepted/lang={lang}": ACCEPTED_SCHEMA for lang in self._languages}
        schemas.update({"rejected": REJECTED_SCHEMA, "failed": FAILED_SCHEMA})

        def keyed(folder_of):
            def key_and_encode(record):
                folder = folder_of(record)
                return (folder, shard_of(record, shards)), _coder_of(folder).encode(record)

            return beam.Map(key_and_encode).with_output_types(Tuple[Tuple[str, int], bytes])

        every_shard = [((folder, shard), b"") for folder in schemas for shard in range(shards)]
        return (
            (
                accepted | "KeyAccepted" >> keyed(lambda pair: f"accepted/lang={pair.target_lang}"),
                rejected | "KeyRejected" >> keyed(lambda _: "rejected"),
                failed | "KeyFailed" >> keyed(lambda _: "failed"),
                accepted.pipeline | "EveryShard" >> Constant(every_shard, Tuple[Tuple[str, int], bytes]),
            )
            | "AllRows" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(self._root, shards, schemas))
        )


class _AddUpCounts(beam.CombineFn):
    """(name, value) entries -> {name: their values added up (``sum_counts``)}: several entries of
    one name (quota fill's rounds each count their look-ups) become one."""

    def create_accumulator(self):
        return {}

    def add_input(self, counts, entry):
        name, value = entry
        counts[name] = sum_counts([counts[name], value]) if name in counts else value
        return counts

    def merge_accumulators(self, accumulators):
        merged = {}
        for counts in accumulators:
            for entry in counts.items():
                self.add_input(merged, entry)
        return merged

    def extract_output(self, counts):
        return counts


class WriteCounts(beam.PTransform):
    """PCollection[(name, value)] -> one JSON object at ``root/relative_path``, the values of a
    name added up; a sink. The object is written in one piece by one worker; a retried write
    writes the same bytes again (an object store shows a new object only once it is whole)."""

    def __init__(self, root: str, relative_path: str):
        super().__init__()
        self._path = f"{root.rstrip('/')}/{relative_path}"

    def expand(self, named_counts):
        path = self._path

        def write(counts):
            with FileSystems.create(path, mime_type="application/json") as stream:
                stream.write(json.dumps(counts, sort_keys=True).encode("utf-8"))

        (
            named_counts
            | "AddUp" >> beam.CombineGlobally(_AddUpCounts()).without_defaults()
            | "WriteJson" >> beam.Map(write)
        )
