"""Write the outcome of a run as Parquet shards with a fixed schema, and the run's counts.

Layout under the output root:
- ``accepted/lang=<code>/part-SSSSS-of-NNNNN.parquet``: ``ACCEPTED_SCHEMA``; every configured
  language gets its shards, a language with no rows gets 0-row files with the schema;
- ``rejected/part-*.parquet``: ``REJECTED_SCHEMA`` (accepted columns where known + stage, reason);
- ``failed/part-*.parquet``: ``FAILED_SCHEMA`` (+ stage, reason, error);
- ``audit/counts.json``: what the pipeline counted where rows do not reach the files (captions
  read, captions eligible for sampling, captions sampled per language). The audit checks the
  Parquet row counts against it.

``lang`` stays out of the file columns (``target_lang`` carries it) so readers that merge hive
partitions with file columns do not clash.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet
from pydantic import Field

from polycap.transforms.outputs import sum_counts
from polycap.transforms.section import Section


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


def _parquet(path_prefix: str, schema: pa.Schema, num_shards: int) -> WriteToParquet:
    return WriteToParquet(
        path_prefix,
        schema,
        codec="zstd",
        file_name_suffix=".parquet",
        num_shards=num_shards,
    )


def _rows(records, label: str, schema: pa.Schema):
    names = schema.names
    return records | label >> beam.Map(lambda record: {name: getattr(record, name) for name in names})


class WriteOutputs(beam.PTransform):
    """(accepted Pairs, Rejected rows, Failed rows) -> Parquet shards under ``root``; a sink."""

    def __init__(self, root: str, languages: Sequence[str], num_shards: int):
        super().__init__()
        self._root = root.rstrip("/")
        self._languages = tuple(languages)
        self._num_shards = num_shards

    def expand(self, outcome):
        accepted, rejected, failed = outcome
        index = {lang: position for position, lang in enumerate(self._languages)}
        by_language = accepted | "ByLanguage" >> beam.Partition(
            lambda pair, _: index[pair.target_lang], len(self._languages)
        )
        for lang, pairs in zip(self._languages, by_language):
            (
                _rows(pairs, f"AcceptedRows[{lang}]", ACCEPTED_SCHEMA)
                | f"WriteAccepted[{lang}]"
                >> _parquet(f"{self._root}/accepted/lang={lang}/part", ACCEPTED_SCHEMA, self._num_shards)
            )
        (
            _rows(rejected, "RejectedRows", REJECTED_SCHEMA)
            | "WriteRejected" >> _parquet(f"{self._root}/rejected/part", REJECTED_SCHEMA, self._num_shards)
        )
        (
            _rows(failed, "FailedRows", FAILED_SCHEMA)
            | "WriteFailed" >> _parquet(f"{self._root}/failed/part", FAILED_SCHEMA, self._num_shards)
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
