"""Read the translation memory: human translations to look captions up in before paying anyone.

``parallel_text``: ``path`` globs source-language files ``X.<source_lang>``; each pairs line by line
with ``X.<target>`` for every configured target language that exists beside it (Multi30k's
``val.en`` / ``val.de`` / ``val.fr`` / ``val.cs``). ``parquet``: files with the columns
``source_lang, target_lang, source_text, translated_text`` (polycap's own accepted shards qualify).
Out: PCollection[MemoryEntry], only for the configured source and target languages.
"""

from __future__ import annotations

import enum
from typing import Iterator, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquet
from pydantic import Field

from polycap.transforms.errors import ConfigError, InputError, PolycapError
from polycap.transforms.files import count_lines, matched_paths, read_lines
from polycap.transforms.outputs import Constant, StageOutput
from polycap.transforms.records import MemoryEntry
from polycap.transforms.section import Section

PARQUET_COLUMNS = ["source_lang", "target_lang", "source_text", "translated_text"]


class MemoryFormat(str, enum.Enum):
    PARALLEL_TEXT = "parallel_text"
    PARQUET = "parquet"


class MemoryConfig(Section):
    """One item of ``translation.memory``: human translations.

    ``parallel_text``: ``path`` globs the source-language files (``.../val.en``); each
    ``X.<source_lang>`` pairs line by line with ``X.<target>`` for every configured target that
    exists. ``parquet``: files with ``source_lang, target_lang, source_text, translated_text``.
    """

    format: MemoryFormat
    path: str = Field(min_length=1)


class AlignedFiles(NamedTuple):
    source_path: str
    target_path: str
    source_lang: str
    target_lang: str


def parallel_files(
    pattern: str,
    named_by: str,
    source_lang: str,
    languages: Sequence[str],
    error: type[PolycapError] = ConfigError,
) -> list[AlignedFiles]:
    """The (source, target) file pairs of parallel text files, not yet checked for alignment:
    each ``X.<source_lang>`` that ``pattern`` matches with every ``X.<lang>`` of ``languages``
    beside it. ``error`` names ``named_by`` for a pattern that matches nothing or a file without
    the source suffix."""
    suffix = f".{source_lang}"
    found = []
    for source_path in matched_paths(pattern, named_by, error):
        if not source_path.endswith(suffix):
            raise error(f"{named_by}: {source_path} does not end in {suffix!r}")
        for target_lang in languages:
            target_path = source_path[: -len(suffix)] + f".{target_lang}"
            if FileSystems.exists(target_path):
                found.append(AlignedFiles(source_path, target_path, source_lang, target_lang))
    return found


def aligned_files(
    pattern: str,
    named_by: str,
    source_lang: str,
    languages: Sequence[str],
    error: type[PolycapError] = ConfigError,
) -> list[AlignedFiles]:
    """``parallel_files``, each pair checked to have as many lines (``files.read_lines``);
    misaligned files are an ``InputError``."""
    found = parallel_files(pattern, named_by, source_lang, languages, error)
    counted: dict[str, int] = {}
    for files in found:
        for path in (files.source_path, files.target_path):
            if path not in counted:
                counted[path] = count_lines(path)
        if counted[files.source_path] != counted[files.target_path]:
            raise InputError(
                f"{named_by}: {files.source_path} has {counted[files.source_path]} lines but "
                f"{files.target_path} has {counted[files.target_path]}; parallel files must be "
                "aligned line by line"
            )
    return found


def check_memories(
    memories: Sequence[MemoryConfig], source_lang: str, languages: Sequence[str]
) -> Optional[set[str]]:
    """The configured languages the ``parallel_text`` memories cover, or None where a Parquet
    memory may cover any of them (its languages are in its rows). A ``parallel_text`` memory that
    covers none (its ``X.<target>`` files missing: a typo, files not copied) is a ConfigError
    naming its key: every pair would otherwise fail ``no_translation`` without a word."""
    covered: Optional[set[str]] = set()
    for index, memory in enumerate(memories):
        key = f"translation.memory[{index}].path"
        if memory.format is not MemoryFormat.PARALLEL_TEXT:
            matched_paths(memory.path, key)
            covered = None
            continue
        # Which languages it covers; its lines are counted once, when the graph is built.
        found = {files.target_lang for files in parallel_files(memory.path, key, source_lang, languages)}
        if not found:
            wanted = " or ".join(f".{lang}" for lang in languages)
            raise ConfigError(
                f"{key}: no {wanted} file beside the .{source_lang} files it matches; "
                "this memory would translate nothing"
            )
        if covered is not None:
            covered |= found
    return covered


def read_aligned(files: AlignedFiles) -> Iterator[MemoryEntry]:
    lines = zip(read_lines(files.source_path), read_lines(files.target_path), strict=True)
    for source_text, translated_text in lines:
        if source_text.strip() and translated_text.strip():
            yield MemoryEntry(files.source_lang, files.target_lang, source_text, translated_text)


def _configured_entry(row: dict, source_lang: str, languages: frozenset) -> list[MemoryEntry]:
    """A Parquet memory row as a MemoryEntry, if it translates from the run's source language
    into one of its languages; a Parquet memory may hold any."""
    wanted = row["source_lang"] == source_lang and row["target_lang"] in languages
    return [MemoryEntry(**row)] if wanted and row["translated_text"] is not None else []


class ReadTranslationMemory(beam.PTransform):
    """PBegin -> StageOutput(kept=PCollection[MemoryEntry]) from every configured memory, only
    for the configured source and target languages. Rejects nothing: a memory that cannot be
    listed or is misaligned is an error before the pipeline runs.

    Every ``parallel_text`` memory's file pairs, listed when the graph is built, are spread over
    the workers by a GroupByKey on their paths, each pair read by one worker (two steps; a
    ``beam.Create`` of them would add a Reshuffle of six). They hold only the configured
    languages, so only Parquet rows, which name theirs, pass a filter."""

    def __init__(self, memories: Sequence[MemoryConfig], source_lang: str, languages: Sequence[str]):
        super().__init__()
        self._memories = tuple(memories)
        self._source_lang = source_lang
        self._languages = tuple(languages)

    def expand(self, pbegin):
        parts, aligned = [], []
        for index, memory in enumerate(self._memories):
            key = f"translation.memory[{index}].path"
            if memory.format is MemoryFormat.PARALLEL_TEXT:
                aligned += aligned_files(memory.path, key, self._source_lang, self._languages)
            else:
                matched_paths(memory.path, key)
                parts.append(
                    pbegin
                    | f"ReadParquet{index}" >> ReadFromParquet(memory.path, columns=PARQUET_COLUMNS)
                    | f"ToEntries{index}" >> beam.FlatMap(
                        _configured_entry, self._source_lang, frozenset(self._languages)
                    ).with_output_types(MemoryEntry)
                )
        if aligned:
            parts.append(
                pbegin
                | "ListAligned" >> Constant([(f"{files.source_path}\t{files.target_path}", files) for files in aligned])
                | "SpreadAligned" >> beam.GroupByKey()
                | "ReadAligned" >> beam.FlatMapTuple(
                    lambda _, same_files: (entry for files in same_files for entry in read_aligned(files))
                ).with_output_types(MemoryEntry)
            )
        if not parts:
            return StageOutput(kept=pbegin | "NoMemory" >> Constant([], MemoryEntry))
        if len(parts) == 1:
            return StageOutput(kept=parts[0])
        return StageOutput(kept=parts | "FlattenMemories" >> beam.Flatten().with_output_types(MemoryEntry))
