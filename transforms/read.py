"""Read source captions from GCC, COCO, VizWiz and Multi30k files on any Beam filesystem.

Every reader streams its file (compressed ones too): TSV and text files line by line, JSON
files with ``ijson`` (one pass over ``images`` for the image URLs, stopping where that array
ends, then one over ``annotations``). Text is passed on exactly as read; judging it is the clean
stage's work.

Caption ids (stable across runs):
- gcc: ``gcc:<file name without extension>:<1-based line>``
- coco, vizwiz: ``coco:<annotation id>``, ``vizwiz:<annotation id>``; an annotation without
  an id gets ``<format>:<file name without extension>:<1-based position in annotations>``
- multi30k: ``multi30k:<split>:<1-based line>``, the image from ``image_splits_<split>.txt``

A file that stops parsing, or whose compressed stream is cut or corrupt, keeps the rows read
before the break and becomes one Failed row ``unreadable_file`` with the id ``file:<path>``.
``read.unreadable_files`` says what the run then does: ``fail`` (the default) ends it with a
non-zero exit naming the files, ``record`` accepts the loss (the audit still lists them).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import json
from typing import Iterable, Iterator, Optional, Sequence, Union

import apache_beam as beam
import ijson
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from pydantic import Field

from polycap.transforms.errors import ConfigError, InputError
from polycap.transforms.files import (
    BROKEN_STREAM_ERRORS,
    file_stem,
    matched_paths,
    open_input,
    stream_lines,
)
from polycap.transforms.outputs import FAILED, KEPT, REJECTED, Constant, CountEach, StageOutput
from polycap.transforms.records import Caption, Failed, Rejected, Stage, reject
from polycap.transforms.section import Section


class InputFormat(str, enum.Enum):
    GCC = "gcc"
    COCO = "coco"
    VIZWIZ = "vizwiz"
    MULTI30K = "multi30k"


class UnreadableFiles(str, enum.Enum):
    FAIL = "fail"  # the run ends with a non-zero exit naming the files
    RECORD = "record"  # a failed row per file, and the run succeeds


class ReadConfig(Section):
    """``read``: what an input file that cannot be read to its end means for the run."""

    unreadable_files: UnreadableFiles = UnreadableFiles.FAIL


class InputConfig(Section):
    """One caption source (an item of ``inputs``): a format and a path or glob on any Beam
    filesystem."""

    format: InputFormat
    path: str = Field(min_length=1)


_NOTHING_KNOWN = Failed(*[None] * len(Failed._fields))
UNREADABLE_ID_PREFIX = "file:"
_IMAGE_URL_KEYS = {
    InputFormat.COCO: ("coco_url", "flickr_url"),
    InputFormat.VIZWIZ: ("vizwiz_url",),
}


class Reason(str, enum.Enum):
    """Why the read stage rejected (or failed) a row."""

    MALFORMED = "malformed"  # a TSV line without exactly one tab; a line not UTF-8; a JSON
    # annotation without an id or whose caption is not a string
    PRECANNED = "precanned"  # VizWiz: its authors advise skipping these
    REJECTED_BY_ANNOTATORS = "rejected_by_annotators"  # VizWiz ``is_rejected``
    UNREADABLE_FILE = "unreadable_file"  # a JSON file that stops parsing, or a cut or corrupt
    # compressed stream (a Failed row, id UNREADABLE_ID_PREFIX + path)


Row = Union[Caption, Rejected]


# Formats whose caption ids are built from the file's stem (COCO and VizWiz ids are annotation ids).
_IDS_FROM_STEM = (InputFormat.GCC, InputFormat.MULTI30K)


def check_inputs(inputs: Sequence[InputConfig]) -> None:
    """Raise ConfigError, naming the input, where a pattern matches no file, or where caption ids
    would collide: a file matched by two inputs, or two files whose ids are built from the same
    stem (``gcc:<stem>:<line>``; sharded exports repeat file names in other folders). Found
    after the run, a collision would have been paid for already."""
    claimed: dict[str, str] = {}  # path -> the input that matched it
    stems: dict[tuple, str] = {}  # (format, stem) -> the path that gives those ids
    for index, source in enumerate(inputs):
        key = f"inputs[{index}].path"
        for path in matched_paths(source.path, key):
            if path in claimed:
                raise ConfigError(f"{key}: {path} is also matched by {claimed[path]}")
            claimed[path] = f"inputs[{index}]"
            if source.format in _IDS_FROM_STEM:
                stem = (source.format, file_stem(path))
                if stem in stems:
                    raise ConfigError(
                        f"{key}: {path} gives the same caption ids as {stems[stem]} "
                        f"({source.format.value}:{stem[1]}:<line>); rename one of them"
                    )
                stems[stem] = path


def read_gcc(path: str, source_lang: str) -> Iterator[Row]:
    """A GCC TSV (``caption<TAB>url``, no header) -> a Caption per line, or ``malformed`` (not
    exactly one tab, or not UTF-8: ``source_text`` is then the whole line)."""
    stem = file_stem(path)
    with open_input(path) as stream:
        for number, (line, utf8) in enumerate(stream_lines(stream), start=1):
            fields = line.split("\t")
            ok = utf8 and len(fields) == 2
            text, url = (fields[0], fields[1]) if ok else (line, None)
            caption = Caption(f"gcc:{stem}:{number}", "gcc", None, url, source_lang, text)
            yield caption if ok else reject(caption, Stage.READ, Reason.MALFORMED)


def _until_array_ends(events: Iterable[tuple], prefix: str) -> Iterator[tuple]:
    """ijson events, stopping where the array at ``prefix`` closes (the rest is not parsed)."""
    for event in events:
        yield event
        if event[0] == prefix and event[1] == "end_array":
            return


def _image_urls(path: str, url_keys: Sequence[str]) -> dict[str, Optional[str]]:
    """First pass over a COCO-style file: ``str(image id) -> URL`` from its ``images``."""
    urls = {}
    with open_input(path) as stream:
        events = _until_array_ends(ijson.parse(stream, use_float=True), "images")
        for image in ijson.items(events, "images.item"):
            if isinstance(image, dict) and image.get("id") is not None:
                urls[str(image["id"])] = next(filter(None, map(image.get, url_keys)), None)
    return urls


def read_coco_style(fmt: InputFormat, path: str, source_lang: str) -> Iterator[Row]:
    """A COCO or VizWiz captions JSON -> a Caption per annotation, or a rejected row:
    ``malformed`` (no id, or a caption that is not a string: ``source_text`` is then the value
    as JSON), and for VizWiz ``precanned`` before ``rejected_by_annotators``."""
    urls = _image_urls(path, _IMAGE_URL_KEYS[fmt])
    stem = file_stem(path)
    with open_input(path) as stream:
        for position, ann in enumerate(ijson.items(stream, "annotations.item", use_float=True), 1):
            ann = ann if isinstance(ann, dict) else {"caption": ann}
            ann_id, image_id, text = ann.get("id"), ann.get("image_id"), ann.get("caption")
            image_id = None if image_id is None else str(image_id)
            caption = Caption(
                caption_id=f"{fmt.value}:{ann_id}" if ann_id is not None
                else f"{fmt.value}:{stem}:{position}",
                dataset=fmt.value,
                image_id=image_id,
                image_url=urls.get(image_id),
                source_lang=source_lang,
                text=text if isinstance(text, str) else json.dumps(text, default=str),
            )
            if ann_id is None or not isinstance(text, str):
                yield reject(caption, Stage.READ, Reason.MALFORMED)
            elif ann.get("is_precanned"):
                yield reject(caption, Stage.READ, Reason.PRECANNED)
            elif ann.get("is_rejected"):
                yield reject(caption, Stage.READ, Reason.REJECTED_BY_ANNOTATORS)
            else:
                yield caption


def read_multi30k(path: str, source_lang: str) -> Iterator[Row]:
    """A Multi30k text file (``<split>.en``) -> a Caption per line (``malformed`` if not UTF-8);
    line N's image is line N of ``image_splits_<split>.txt`` beside it (its ``#<annotation id>``
    cut off), else None."""
    split = file_stem(path)
    splits_path = FileSystems.join(FileSystems.split(path)[0], f"image_splits_{split}.txt")
    has_images = FileSystems.exists(splits_path)
    with open_input(path) as texts, (
        open_input(splits_path) if has_images else contextlib.nullcontext()
    ) as images:
        pairs = itertools.zip_longest(stream_lines(texts), stream_lines(images) if images is not None else ())
        for number, (line, image) in enumerate(pairs, start=1):
            if line is None:  # the image list is longer than the text: no more captions
                return
            text, utf8 = line
            image_id = image[0].split("#", 1)[0].strip() if image else None
            caption = Caption(f"multi30k:{split}:{number}", "multi30k", image_id or None, None,
                              source_lang, text)
            yield caption if utf8 else reject(caption, Stage.READ, Reason.MALFORMED)


def _one_line(error: Exception) -> str:
    message = error.args[0] if error.args else str(error)
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    return (str(message).splitlines() or [""])[0].strip()


class _ReadFileFn(beam.DoFn):
    """(path, [the index of the input that matched it]) -> Caption (main), Rejected
    (``rejected``) and Failed (``failed``) rows, counted in namespace ``read`` as ``kept`` or by
    reason. A JSON file that stops parsing becomes one Failed ``unreadable_file`` row."""

    def __init__(self, formats: Sequence[InputFormat], source_lang: str):
        self._formats = tuple(InputFormat(fmt) for fmt in formats)
        self._source_lang = source_lang
        self._kept = Metrics.counter(Stage.READ.value, KEPT)

    def _rows(self, fmt: InputFormat, path: str) -> Iterator[Row]:
        if fmt is InputFormat.GCC:
            return read_gcc(path, self._source_lang)
        if fmt is InputFormat.MULTI30K:
            return read_multi30k(path, self._source_lang)
        return read_coco_style(fmt, path, self._source_lang)

    def process(self, matched):
        path, indices = matched[0], sorted(matched[1])
        if len(indices) != 1:  # check_inputs refused it before the run; the files changed since
            inputs = ", ".join(f"inputs[{index}]" for index in indices)
            raise InputError(f"{path} is matched by {inputs}: its caption ids would repeat")
        fmt = self._formats[indices[0]]
        try:
            for row in self._rows(fmt, path):
                if isinstance(row, Caption):
                    self._kept.inc()
                    yield row
                else:
                    Metrics.counter(Stage.READ.value, row.reason).inc()
                    yield beam.pvalue.TaggedOutput(REJECTED, row)
        except (ijson.JSONError, *BROKEN_STREAM_ERRORS) as error:
            # Rows already emitted from this file stay; the rest of the file is one Failed row.
            Metrics.counter(Stage.READ.value, Reason.UNREADABLE_FILE.value).inc()
            what = "not valid JSON" if isinstance(error, ijson.JSONError) else "broken compressed stream"
            yield beam.pvalue.TaggedOutput(FAILED, _NOTHING_KNOWN._replace(
                caption_id=f"{UNREADABLE_ID_PREFIX}{path}", dataset=fmt.value, source_lang=self._source_lang,
                stage=Stage.READ.value, reason=Reason.UNREADABLE_FILE.value,
                error=f"{path}: {what}: {_one_line(error)}"))


class ReadCaptions(beam.PTransform):
    """PBegin -> StageOutput(kept=Caption, rejected=Rejected, failed=Failed, counts=("read", rows
    read)): every input's ``path`` (a glob on any Beam filesystem) matched where the job runs,
    the files spread over the workers by a GroupByKey on their paths, each read by one worker with
    its input's reader; the de-duplication's GroupByKey, right after cleaning, spreads the
    captions. One set of steps for any number of inputs."""

    def __init__(self, inputs: Sequence[InputConfig], source_lang: str):
        super().__init__()
        self._inputs = tuple(inputs)
        self._source_lang = source_lang

    def expand(self, pbegin):
        patterns = [(index, source.path) for index, source in enumerate(self._inputs)]

        def matched(index, pattern):
            for path in matched_paths(pattern, f"inputs[{index}].path", InputError):
                yield path, index

        rows = (
            pbegin
            | "Inputs" >> Constant(patterns)
            | "Match" >> beam.FlatMapTuple(matched)
            | "SpreadFiles" >> beam.GroupByKey()
            | "ReadFiles" >> beam.ParDo(
                _ReadFileFn([source.format for source in self._inputs], self._source_lang)
            ).with_outputs(REJECTED, FAILED, main=KEPT)
        )
        kept, rejected, failed = rows[KEPT], rows[REJECTED], rows[FAILED]
        counts = {"read": (kept, rejected, failed)} | "Count read" >> CountEach()
        return StageOutput(kept=kept, rejected=rejected, failed=failed, counts=counts)
