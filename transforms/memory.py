"""Read the translation memory: human translations to look captions up in before paying anyone.

``parallel_text``: ``path`` globs source-language files ``X.<source_lang>``; each pairs line by line
with ``X.<target>`` for every configured target language that exists beside it (Multi30k's
``val.en`` / ``val.de`` / ``val.fr`` / ``val.cs``). ``parquet``: files with the columns
``source_lang, target_lang, source_text, translated_text`` (polycap's own accepted shards qualify).
Out: PCollection[MemoryEntry], only for the configured source and target languages.
"""

from __future__ import annotations

import io
from typing import Iterator, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquet

from polycap.pipeline.config import MemoryConfig, MemoryFormat
from polycap.transforms.errors import ConfigError, InputError
from polycap.transforms.records import MemoryEntry

PARQUET_COLUMNS = ["source_lang", "target_lang", "source_text", "translated_text"]


class AlignedFiles(NamedTuple):
    source_path: str
    target_path: str
    source_lang: str
    target_lang: str


def _lines(path: str) -> Iterator[str]:
    with FileSystems.open(path) as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8"):
            yield line.rstrip("\r\n")


def _count_lines(path: str) -> int:
    return sum(1 for _ in _lines(path))


def _matched_paths(key: str, pattern: str) -> list[str]:
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception as error:  # Beam raises BeamIOError or the filesystem's own errors
        raise ConfigError(f"{key}: cannot list {pattern!r}: {error}") from None
    if not matches:
        raise ConfigError(f"{key}: no file matches {pattern!r}")
    return sorted(metadata.path for metadata in matches)


def aligned_files(
    key: str, cfg: MemoryConfig, source_lang: str, languages: Sequence[str]
) -> list[AlignedFiles]:
    """The (source, target) file pairs of a ``parallel_text`` memory, checked for alignment."""
    suffix = f".{source_lang}"
    found = []
    for source_path in _matched_paths(key, cfg.path):
        if not source_path.endswith(suffix):
            raise ConfigError(f"{key}: {source_path} does not end in {suffix!r}")
        source_lines = None
        for target_lang in languages:
            target_path = source_path[: -len(suffix)] + f".{target_lang}"
            if not FileSystems.exists(target_path):
                continue
            source_lines = source_lines if source_lines is not None else _count_lines(source_path)
            target_lines = _count_lines(target_path)
            if target_lines != source_lines:
                raise InputError(
                    f"{key}: {source_path} has {source_lines} lines but {target_path} has "
                    f"{target_lines}; parallel files must be aligned line by line"
                )
            found.append(AlignedFiles(source_path, target_path, source_lang, target_lang))
    return found


def read_aligned(files: AlignedFiles) -> Iterator[MemoryEntry]:
    for source_text, translated_text in zip(_lines(files.source_path), _lines(files.target_path)):
        if source_text.strip() and translated_text.strip():
            yield MemoryEntry(files.source_lang, files.target_lang, source_text, translated_text)


class ReadTranslationMemory(beam.PTransform):
    """PBegin -> PCollection[MemoryEntry] from every configured memory."""

    def __init__(self, memories: Sequence[MemoryConfig], source_lang: str, languages: Sequence[str]):
        super().__init__()
        self._memories = tuple(memories)
        self._source_lang = source_lang
        self._languages = tuple(languages)

    def expand(self, pbegin):
        parts = []
        for index, memory in enumerate(self._memories):
            key = f"translation.memory[{index}].path"
            if memory.format is MemoryFormat.PARALLEL_TEXT:
                files = aligned_files(key, memory, self._source_lang, self._languages)
                parts.append(
                    pbegin
                    | f"ListAligned{index}" >> beam.Create(files)
                    | f"ReadAligned{index}" >> beam.FlatMap(read_aligned).with_output_types(MemoryEntry)
                )
            else:
                _matched_paths(key, memory.path)
                parts.append(
                    pbegin
                    | f"ReadParquet{index}" >> ReadFromParquet(memory.path, columns=PARQUET_COLUMNS)
                    | f"ToEntries{index}" >> beam.Map(lambda row: MemoryEntry(**row)).with_output_types(MemoryEntry)
                )
        if not parts:
            return pbegin | "NoMemory" >> beam.Create([]).with_output_types(MemoryEntry)
        wanted = set(self._languages)
        return (
            parts
            | "FlattenMemories" >> beam.Flatten()
            | "ConfiguredLanguages"
            >> beam.Filter(
                lambda entry, source_lang=self._source_lang: entry.source_lang == source_lang
                and entry.target_lang in wanted
                and entry.translated_text is not None
            )
        )
