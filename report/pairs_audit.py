"""Parallel caption sets that polycap did not produce: read them, score them with the project's
encoder (``transforms/score.py``), and audit them with the same report as a run.

    polycap audit REPORT_DIR --pairs FILE_OR_GLOB --source-col en --target-col de --lang de

A parallel set is either aligned text files (``X.<source_lang>`` paired line by line with
``X.<lang>`` beside it, as Multi30k's ``val.en`` / ``val.de``) or tables with one pair per row:
Parquet (``.parquet``), CSV with a header (``.csv``), JSON Lines (``.jsonl``, ``.ndjson``).
A file that cannot be read, lacks a named column, or is not aligned is an ``InputError`` naming
it. A row whose source or translation is missing or blank is rejected as ``empty`` (stage
``read``); one whose translation equals its source is rejected as ``untranslated``; the rest are
scored and, given ``--min-similarity``, accepted or rejected as ``low_similarity``.
"""

from __future__ import annotations

import datetime
import io
import logging
import time
from pathlib import PurePosixPath
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from polycap.report import audit, runfacts
from polycap.pipeline.config import MemoryConfig, MemoryFormat, ScoreBackend, ScoreConfig
from polycap.transforms.errors import ConfigError, InputError
from polycap.transforms import score
from polycap.transforms.clean import match_key
from polycap.transforms.memory import aligned_files
from polycap.transforms.records import Stage

_READERS: dict[str, Callable[[io.BytesIO], pa.Table]] = {
    ".parquet": pq.read_table,
    ".csv": pyarrow.csv.read_csv,
    ".jsonl": pyarrow.json.read_json,
    ".ndjson": pyarrow.json.read_json,
}
EMPTY = "empty"

log = logging.getLogger(__name__)


class ParallelSet(NamedTuple):
    """Aligned columns, one entry per pair: an id (``file stem:row``), the dataset (the file's
    stem unless a column names it), the source and the translation (None where missing)."""

    ids: list[str]
    datasets: list[str]
    sources: list[Optional[str]]
    targets: list[Optional[str]]

    def __len__(self) -> int:
        return len(self.ids)

    def usable(self) -> list[int]:
        """Positions of the pairs whose source and translation are both non-blank text."""
        pairs = enumerate(zip(self.sources, self.targets))
        return [i for i, (source, target) in pairs if _filled(source) and _filled(target)]


def _matched(option: str, pattern: str) -> list[str]:
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception as error:  # each filesystem raises its own errors
        raise InputError(f"{option} {pattern}: cannot list it: {error}") from None
    if not matches:
        raise InputError(f"{option} {pattern}: no file matches")
    return sorted(metadata.path for metadata in matches)


def _stem(path: str) -> str:
    return PurePosixPath(path).name.split(".", 1)[0]


def _text(value) -> Optional[str]:
    return value if isinstance(value, str) else None


def _filled(text: Optional[str]) -> bool:
    return bool(text and text.strip())


def _lines(path: str) -> list[str]:
    with FileSystems.open(path) as stream:
        return stream.read().decode("utf-8").splitlines()


def read_aligned_text(option: str, pattern: str, source_lang: str, lang: str) -> ParallelSet:
    """Pairs from aligned text files: each ``X.<source_lang>`` with the ``X.<lang>`` beside it."""
    found = ParallelSet([], [], [], [])
    memory = MemoryConfig(format=MemoryFormat.PARALLEL_TEXT, path=pattern)
    try:
        files = aligned_files(option, memory, source_lang, [lang])
    except ConfigError as error:  # a file named on the command line, not a config key
        raise InputError(str(error)) from None
    if not files:
        raise InputError(f"{option} {pattern}: no .{lang} file beside the .{source_lang} files")
    for pair in files:
        stem = _stem(pair.source_path)
        for number, (source, target) in enumerate(
            zip(_lines(pair.source_path), _lines(pair.target_path)), 1
        ):
            found.ids.append(f"{stem}:{number}")
            found.datasets.append(stem)
            found.sources.append(source)
            found.targets.append(target)
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
    for path in _matched(option, pattern):
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
        stem = _stem(path)
        columns = {column: table.column(column).to_pylist() for column in wanted}
        for row in range(table.num_rows):
            found.ids.append(str(columns[id_col][row]) if id_col else f"{stem}:{row + 1}")
            found.datasets.append(str(columns[dataset_col][row]) if dataset_col else stem)
            found.sources.append(_text(columns[source_col][row]))
            found.targets.append(_text(columns[target_col][row]))
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


def scorer_config(spec: Optional[str], batch_size: int = 128) -> ScoreConfig:
    """``use-multilingual`` or ``sentence-transformers/<model name or local path>``."""
    if not spec:
        return ScoreConfig(batch_size=batch_size)
    backend, _, model = spec.partition("/")
    try:
        return ScoreConfig(
            backend=ScoreBackend(backend), model=model or None, batch_size=batch_size
        )
    except ValueError as error:
        known = ", ".join(item.value for item in ScoreBackend)
        raise ConfigError(
            f"--scorer {spec}: expected BACKEND[/MODEL] with BACKEND one of {known} "
            f"({str(error).splitlines()[-1].strip()})"
        ) from None


def uncovered(cfg: ScoreConfig, source_lang: str, languages: Sequence[str]) -> list[str]:
    """The languages the scorer does not cover, source first."""
    covered = score.supported_languages(cfg)
    return [
        code for code in dict.fromkeys([source_lang, *languages]) if not score.covers(covered, code)
    ]


def embed(encoder: score.Encoder, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """Embeddings of ``texts``, encoded ``batch_size`` at a time."""
    parts = [
        np.asarray(encoder(list(texts[start : start + batch_size])), dtype=np.float64)
        for start in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _row(pairs: ParallelSet, index: int, lang: Optional[str], similarity: Optional[float],
         decision: tuple[str, Optional[str], Optional[str]]) -> dict:
    outcome, stage, reason = decision
    return {
        "caption_id": pairs.ids[index], "dataset": pairs.datasets[index], "target_lang": lang,
        "source_text": pairs.sources[index], "translated_text": pairs.targets[index],
        "provider": None, "similarity": similarity, "propn_ratio": None,
        "outcome": outcome, "stage": stage, "reason": reason,
    }


def outcome(pairs: ParallelSet, lang: str, similarities: dict, min_similarity: Optional[float],
            output: str, run: dict) -> audit.Outcome:
    """The audit's view of a scored parallel set: blank rows are invalid (``empty``), untranslated
    rows rejected (keep's rule: ``match_key`` equal), scored rows accepted unless under
    ``min_similarity``."""
    rows = []
    for index in range(len(pairs)):
        similarity = similarities.get(index)
        if similarity is None:
            rows.append(_row(pairs, index, None, None, (audit.REJECTED, Stage.READ.value, EMPTY)))
            continue
        if match_key(pairs.sources[index]) == match_key(pairs.targets[index]):
            decision = (audit.REJECTED, Stage.KEEP.value, audit.UNTRANSLATED)
        elif min_similarity is not None and similarity < min_similarity:
            decision = (audit.REJECTED, Stage.KEEP.value, audit.LOW_SIMILARITY)
        else:
            decision = (audit.ACCEPTED, None, None)
        rows.append(_row(pairs, index, lang, similarity, decision))
    eligible = len(similarities)
    counted = {"read": len(pairs), "eligible": eligible, "languages": [lang],
               "sampled": {lang: eligible}}
    return audit.Outcome(output, "pairs", rows, counted, run)


def audit_pairs(
    output: str,
    pattern: str,
    lang: str,
    *,
    source_lang: str = "en",
    source_col: Optional[str] = None,
    target_col: Optional[str] = None,
    dataset_col: Optional[str] = None,
    scorer: Optional[str] = None,
    min_similarity: Optional[float] = None,
    allow_uncovered: bool = False,
    load: Callable[[ScoreConfig], score.Encoder] = score.load_encoder,
) -> dict:
    """Score the parallel set ``pattern`` and write its audit under ``output`` (``audit/``)."""
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    cfg = scorer_config(scorer)
    missing = uncovered(cfg, source_lang, [lang])
    if missing and not allow_uncovered:
        raise ConfigError(
            f"--scorer: {cfg.backend.value} does not cover {', '.join(missing)}; its scores "
            "would say nothing about translation quality (--allow-uncovered to score anyway)"
        )
    pairs = read_parallel(
        "--pairs", pattern, source_lang, lang, source_col, target_col, dataset_col
    )
    if not len(pairs):
        raise InputError(f"--pairs {pattern}: no pairs")
    valid = pairs.usable()
    encoder = load(cfg)
    sources = embed(encoder, [pairs.sources[i] for i in valid], cfg.batch_size)
    targets = embed(encoder, [pairs.targets[i] for i in valid], cfg.batch_size)
    cosines = score.cosine_rows(sources, targets) if valid else []
    similarities = {index: float(value) for index, value in zip(valid, cosines)}
    run = {
        **runfacts.versions(),
        "runner": "polycap audit --pairs (no pipeline)",
        "started": runfacts.timestamp(started),
        "wall_seconds": round(time.monotonic() - clock, 3),
        "models": {"score": runfacts.score_model(cfg)},
        "config": {
            "pairs": {"path": pattern, "source_lang": source_lang, "lang": lang,
                      "source_col": source_col, "target_col": target_col,
                      "dataset_col": dataset_col},
            "score": cfg.model_dump(mode="json"),
            "keep": {"min_similarity": min_similarity},
        },
        "uncovered_languages": missing,
    }
    if missing:
        log.warning(
            "the scorer does not cover %s: these scores say nothing about quality",
            ", ".join(missing),
        )
    return audit.write_report(
        output, audit.analyse(outcome(pairs, lang, similarities, min_similarity, output, run))
    )
