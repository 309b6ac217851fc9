"""Parallel caption sets that polycap did not produce, read for ``polycap audit --pairs`` and
``polycap calibrate``.

A parallel set is either aligned text files (``X.<source_lang>`` paired line by line with
``X.<lang>`` beside it, as Multi30k's ``val.en`` / ``val.de``; lines as ``files.read_lines``
splits them, the same as the translation memory) or tables with one pair per row: Parquet
(``.parquet``), CSV with a header (``.csv``), JSON Lines (``.jsonl``, ``.ndjson``). A file that
cannot be read, lacks a named column, or is not aligned is an ``InputError`` naming it.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import Callable, NamedTuple, Optional

import pyarrow as pa
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from polycap.transforms.errors import ConfigError, InputError
from polycap.transforms.files import file_stem, matched_paths, read_lines
from polycap.transforms.memory import aligned_files

_READERS: dict[str, Callable[[io.BytesIO], pa.Table]] = {
    ".parquet": pq.read_table,
    ".csv": pyarrow.csv.read_csv,
    ".jsonl": pyarrow.json.read_json,
    ".ndjson": pyarrow.json.read_json,
}


class ParallelSet(NamedTuple):
    """Aligned columns, one entry per pair: an id (``file stem:row``), the dataset (the file's
    stem unless a column names it), the source and the translation (None where missing)."""

    ids: list[str]
    datasets: list[str]
    sources: list[Optional[str]]
    targets: list[Optional[str]]

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, pair_id: str, dataset: str, source: Optional[str], target: Optional[str]) -> None:
        self.ids.append(pair_id)
        self.datasets.append(dataset)
        self.sources.append(source)
        self.targets.append(target)

    def usable(self) -> list[int]:
        """Positions of the pairs whose source and translation are both non-blank text."""
        pairs = enumerate(zip(self.sources, self.targets))
        return [i for i, (source, target) in pairs if _filled(source) and _filled(target)]


def _text(value) -> Optional[str]:
    return value if isinstance(value, str) else None


def _filled(text: Optional[str]) -> bool:
    return bool(text and text.strip())


def read_aligned_text(option: str, pattern: str, source_lang: str, lang: str) -> ParallelSet:
    """Pairs from aligned text files: each ``X.<source_lang>`` with the ``X.<lang>`` beside it."""
    found = ParallelSet([], [], [], [])
    files = aligned_files(pattern, option, source_lang, [lang], error=InputError)
    if not files:
        raise InputError(f"{option} {pattern}: no .{lang} file beside the .{source_lang} files")
    for pair in files:
        stem = file_stem(pair.source_path)
        lines = zip(read_lines(pair.source_path), read_lines(pair.target_path), strict=True)
        for number, (source, target) in enumerate(lines, 1):
            found.add(f"{stem}:{number}", stem, source, target)
    return found


def read_tables(
    option: str,
    pattern: str,
    source_col: str,
    target_col: str,
    dataset_col: Optional[str] = None,
    id_col: Optional[str] = None,
) -> ParallelSet:
    """Pairs from Parquet, CSV or JSON Lines files, one pair per row."""
    found = ParallelSet([], [], [], [])
    for path in matched_paths(pattern, option, InputError):
        suffix = PurePosixPath(path).suffix.lower()
        if suffix not in _READERS:
            raise InputError(
                f"{path}: unknown format {suffix!r} (expected one of {', '.join(_READERS)})"
            )
        try:
            with FileSystems.open(path) as stream:
                table = _READERS[suffix](io.BytesIO(stream.read()))
        except (pa.ArrowException, OSError) as error:
            raise InputError(f"{path}: cannot read it as {suffix[1:]}: {error}") from None
        wanted = [column for column in (source_col, target_col, dataset_col, id_col) if column]
        missing = [column for column in wanted if column not in table.column_names]
        if missing:
            raise InputError(
                f"{path}: no column {', '.join(map(repr, missing))} "
                f"(it has {', '.join(table.column_names)})"
            )
        stem = file_stem(path)
        columns = {column: table.column(column).to_pylist() for column in wanted}
        for row in range(table.num_rows):
            found.add(
                str(columns[id_col][row]) if id_col else f"{stem}:{row + 1}",
                str(columns[dataset_col][row]) if dataset_col else stem,
                _text(columns[source_col][row]),
                _text(columns[target_col][row]),
            )
    return found


def is_table(pattern: str) -> bool:
    return PurePosixPath(pattern).suffix.lower() in _READERS


def read_parallel(
    option: str,
    pattern: str,
    source_lang: str,
    lang: str,
    source_col: Optional[str] = None,
    target_col: Optional[str] = None,
    dataset_col: Optional[str] = None,
) -> ParallelSet:
    """A parallel set from ``pattern``: tables by their suffix, aligned text files otherwise."""
    if is_table(pattern):
        if not (source_col and target_col):
            raise ConfigError(f"{option}: tables need --source-col and --target-col")
        return read_tables(option, pattern, source_col, target_col, dataset_col)
    return read_aligned_text(option, pattern, source_lang, lang)
