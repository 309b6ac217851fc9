"""Files on any Beam filesystem, read the same way everywhere: which files a pattern names, what
a line is, and a file's stem.

A line ends at ``\\n`` (an ``\\r`` before it is dropped) and nowhere else. Python's
``str.splitlines`` also splits at U+0085, U+2028, form feeds and more, and universal newlines at a
lone ``\\r``: a caption holding one of those would count as two lines in one reader and one in
another, and two aligned files counted one way and zipped the other would pair every later line
with the wrong translation, silently. Every reader of polycap's uses these functions.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import zlib
from typing import BinaryIO, Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from polycap.transforms.errors import ConfigError, InputError, PolycapError


def matched_paths(pattern: str, named_by: str, error: type[PolycapError] = ConfigError) -> list[str]:
    """The sorted paths ``pattern`` matches; ``error`` naming ``named_by`` (a config key or a
    command-line option) when it cannot be listed or matches nothing."""
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception as failure:  # each filesystem raises its own errors
        raise error(f"{named_by}: cannot list {pattern!r}: {failure}") from None
    if not matches:
        raise error(f"{named_by}: no file matches {pattern!r}")
    return sorted(metadata.path for metadata in matches)


# Python's own decompressors: unlike a stream that simply stops, they raise where a compressed
# file ends before its end-of-stream marker (a cut download) or is not what its name says.
_DECOMPRESSORS = {
    CompressionTypes.GZIP: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    CompressionTypes.BZIP2: lambda raw: bz2.BZ2File(raw, mode="rb"),
    CompressionTypes.LZMA: lambda raw: lzma.LZMAFile(raw, mode="rb"),
}
# What a cut or corrupt compressed stream raises: EOFError where it ends early, the others where
# it is not what its name says (bz2's "Invalid data stream" is a bare OSError, not caught: any
# I/O error would look like it).
BROKEN_STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


@contextlib.contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """A binary stream of the file's content, decompressed by its suffix (``.gz``, ``.bz2``,
    ``.xz``; other compressions as Beam reads them). Beam's own gzip reader ends quietly where a
    cut file ends, losing the rest without a word; these raise one of ``BROKEN_STREAM_ERRORS``."""
    compression = CompressionTypes.detect_compression_type(path)
    if compression not in _DECOMPRESSORS:
        with FileSystems.open(path) as stream:
            yield stream
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        with _DECOMPRESSORS[compression](raw) as stream:
            yield stream


def stream_lines(stream) -> Iterator[tuple[str, bool]]:
    """(line without its line end, whether it was valid UTF-8) for each line of a binary stream;
    bytes that are not UTF-8 become U+FFFD."""
    for raw in iter(stream.readline, b""):
        raw = raw.rstrip(b"\r\n")
        try:
            yield raw.decode("utf-8"), True
        except UnicodeDecodeError:
            yield raw.decode("utf-8", errors="replace"), False


def read_lines(path: str) -> Iterator[str]:
    """The lines of a UTF-8 text file; ``InputError`` naming the file and line where a line is
    not UTF-8 (a parallel file with a broken line cannot be trusted to stay aligned)."""
    with FileSystems.open(path) as stream:
        for number, (line, utf8) in enumerate(stream_lines(stream), start=1):
            if not utf8:
                raise InputError(f"{path}: line {number} is not UTF-8")
            yield line


def count_lines(path: str) -> int:
    return sum(1 for _ in read_lines(path))


def file_stem(path: str) -> str:
    """``gs://b/dir/val.en`` (or ``val.en.gz``) -> ``val``: the name without its compression
    suffix and its last extension."""
    name = FileSystems.split(path)[1]
    if CompressionTypes.detect_compression_type(name) != CompressionTypes.UNCOMPRESSED:
        name = os.path.splitext(name)[0]
    return os.path.splitext(name)[0]
