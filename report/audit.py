"""The audit of a finished output directory: what was read, removed at each stage and why,
sampled, accepted, rejected and failed per language, what the scores look like and what the
translations cost, computed from the Parquet files themselves.

The pipeline's own counts (``audit/counts.json``: read, eligible, sampled per language) are
checked against the rows in the files: ``read = invalid + duplicate + propn + failed + eligible``
and, per language, ``sampled = accepted + rejected + failed``. A broken law is a bug, and the
audit says so in ``checks``. The run's facts (``audit/run.json``, written by ``polycap run``:
config, versions, runner, times) give the thresholds the report draws, and the score they apply
to: the cosine (``similarity``), or with ``score.margin`` the ratio margin (``margin``), which
then stands in for ``similarity`` in every number, example and law of a language (``scored_by``;
examples keep the cosine beside it).

``audit.json`` holds every number of the report; ``audit.html`` (``html_page.py``) only
draws and lays them out. Memory: the files are read a batch at a time, only the columns the
numbers need. Every count is summed from the rows grouped by dataset, language, provider,
outcome, stage and reason; the audit keeps one narrow row per sampled pair (id, language,
outcome, scores, text lengths, where the row lies: about 70 bytes, no texts) and per caption the
PROPN stage removed, and reads the texts of only the rows it shows as examples. 3 million rows
take about 850 MiB at peak, 420 of them the imports (``benchmarks/audit_memory.py``).
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter, defaultdict
from typing import Callable, Iterable, NamedTuple, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from polycap.report import runfacts
from polycap.report.stats import histogram, quantiles
from polycap.transforms.checks import CheckReason
from polycap.transforms.errors import InputError
from polycap.transforms.keep import Reason as KeepReason
from polycap.transforms import clean, deduplicate, propn, read
from polycap.transforms.read import UNREADABLE_ID_PREFIX
from polycap.transforms.read import Reason as ReadReason
from polycap.transforms.providers import OnlineProvider
from polycap.transforms.records import Stage
from polycap.transforms.store import read_store_rows
from polycap.transforms.translate import Reason as TranslateReason
from polycap.transforms.write import COUNTS_FILE, REJECTED_SCHEMA

AUDIT_JSON = "audit/audit.json"
AUDIT_HTML = "audit/audit.html"
_INVALID_STAGES = {Stage.READ.value, Stage.CLEAN.value}
UNTRANSLATED = KeepReason.UNTRANSLATED.value
LOW_SIMILARITY = KeepReason.LOW_SIMILARITY.value

EXAMPLES = 5  # pairs shown as best, borderline and worst per language; PROPN removals twice that
SIMILARITY_BIN = 0.025
LENGTH_RATIO_EDGES = [round(0.1 * step, 1) for step in range(31)]  # 0.0 .. 3.0; more counts as 3.0
PROPN_EDGES = [round(0.05 * step, 2) for step in range(21)]  # 0.0 .. 1.0

_COLUMNS = ["caption_id", "dataset", "image_id", "image_url", "target_lang", "source_text",
            "translated_text", "provider", "similarity", "margin", "propn_ratio"]
ACCEPTED, REJECTED, FAILED = "accepted", "rejected", "failed"
COSINE, MARGIN = "cosine", "margin"  # the scores a keep rule can apply to (``threshold_rule``)
# The reasons each early stage counts (its other counters, such as kept, are not rows).
_REASONS = {
    Stage.READ: {reason.value for reason in read.Reason},
    Stage.CLEAN: {reason.value for reason in clean.Reason},
    Stage.DEDUPLICATE: {reason.value for reason in deduplicate.Reason},
    Stage.PROPN: {reason.value for reason in propn.Reason},
}

log = logging.getLogger(__name__)


# Providers whose translations are stored ones: a hit, never a call, never billed.
CACHE_PROVIDERS = frozenset({"memory", "store"})

# What the counts are grouped by: every count of the report is a sum over these groups.
_GROUP_KEYS = ["dataset", "target_lang", "provider", "outcome", "stage", "reason"]
_ROW_SCHEMA = pa.schema(
    [REJECTED_SCHEMA.field(name) for name in _COLUMNS + ["stage", "reason"]]
    + [pa.field("outcome", pa.string())]
)
BATCH_ROWS = 65_536  # rows read at a time from a Parquet file
READ_BUFFER_BYTES = 1 << 20


class Scanned(NamedTuple):
    """The output's rows as the audit needs them, without their texts.

    ``groups``: one dict per distinct (``_GROUP_KEYS``) with ``rows`` and ``characters`` (source
    characters), which every count is summed from; ``sampled``: one narrow row per sampled pair
    (``target_lang`` set): caption_id, target_lang, outcome, untranslated, reason, similarity,
    margin,
    propn_ratio, source_chars, translated_chars and where it lies (``part``, ``row``);
    ``removed``: caption_id, propn_ratio, part, row of every caption the PROPN stage removed;
    ``unreadable``: the ids of the rows that name an input file read only up to a break;
    ``fetch``: the full rows (dicts, as the report shows them) at a list of (part, row)."""

    groups: list
    sampled: pa.Table
    removed: pa.Table
    unreadable: list
    fetch: Callable[[list], list]


class Audited(NamedTuple):
    """What an audit is computed from. ``rows``: the output's rows, ``Scanned`` (what ``load``
    gives: no texts but those of the rows shown) or a list of dicts of ``_COLUMNS`` plus
    ``outcome`` (accepted / rejected / failed), ``stage`` and ``reason`` (None when accepted),
    for small sets built in memory (``polycap audit --pairs``);
    ``counted``: the pipeline's counts (``read``, ``eligible``, ``languages``, ``sampled``);
    ``run``: the run facts (``runfacts``), {} when unknown."""

    output: str
    mode: str  # "run": a polycap output directory; "pairs": a parallel set scored by the audit
    rows: Union[Scanned, list]
    counted: dict
    run: dict


# ---------------------------------------------------------------------------------- reading


class _Scanner:
    """Reads rows a batch at a time and keeps only what the numbers need (``Scanned``)."""

    def __init__(self):
        self.groups: Counter = Counter()
        self.characters: Counter = Counter()
        self.sampled: list[pa.Table] = []
        self.removed: list[pa.Table] = []
        self.unreadable: list[str] = []

    def add(self, batch: pa.Table, part: int, first_row: int) -> None:
        """``batch``: rows of ``_ROW_SCHEMA``, the ``first_row``-th onwards of part ``part``."""
        source_chars = pc.utf8_length(batch["source_text"])
        grouped = (
            batch.select(_GROUP_KEYS)
            .append_column("characters", pc.fill_null(source_chars, 0))
            .group_by(_GROUP_KEYS, use_threads=False)
            .aggregate([("characters", "sum"), ("characters", "count")])
        )
        for group in grouped.to_pylist():
            key = tuple(group[name] for name in _GROUP_KEYS)
            self.groups[key] += group["characters_count"]
            self.characters[key] += group["characters_sum"]
        lang, outcome, stage, reason = (
            batch[name] for name in ("target_lang", "outcome", "stage", "reason")
        )
        located = {
            "part": pa.array(np.full(batch.num_rows, part, dtype=np.int32)),
            "row": pa.array(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64)),
        }
        early = pc.is_null(lang)
        self.sampled.append(
            pa.table(
                {
                    "caption_id": batch["caption_id"],
                    "target_lang": lang,
                    "outcome": outcome,
                    "untranslated": pc.fill_null(pc.equal(reason, UNTRANSLATED), False),
                    "reason": reason,
                    "similarity": batch["similarity"],
                    "margin": batch["margin"],
                    "propn_ratio": batch["propn_ratio"],
                    "source_chars": source_chars,
                    "translated_chars": pc.utf8_length(batch["translated_text"]),
                    "image": _image_hashes(batch),
                    **located,
                }
            ).filter(pc.invert(early))
        )
        removed = pc.and_(
            early,
            pc.fill_null(
                pc.and_(pc.equal(outcome, REJECTED), pc.equal(stage, Stage.PROPN.value)), False
            ),
        )
        self.removed.append(
            pa.table(
                {"caption_id": batch["caption_id"], "propn_ratio": batch["propn_ratio"], **located}
            ).filter(removed)
        )
        unreadable = pc.and_(
            early,
            pc.fill_null(
                pc.and_(
                    pc.equal(outcome, FAILED), pc.equal(reason, ReadReason.UNREADABLE_FILE.value)
                ),
                False,
            ),
        )
        self.unreadable += batch["caption_id"].filter(unreadable).to_pylist()

    def scanned(self, fetch: Callable[[list], list]) -> Scanned:
        groups = [
            {**dict(zip(_GROUP_KEYS, key)), "rows": rows, "characters": self.characters[key]}
            for key, rows in self.groups.items()
        ]
        empty = _Scanner()
        empty.add(_ROW_SCHEMA.empty_table(), 0, 0)
        sampled = pa.concat_tables(self.sampled or empty.sampled)
        removed = pa.concat_tables(self.removed or empty.removed)
        return Scanned(groups, sampled, removed, self.unreadable, fetch)


def _image_hashes(batch: pa.Table) -> pa.Array:
    """A 64-bit hash of each row's image as ``sample.image_of`` names it: 8 bytes a row, enough
    to count distinct images per language without holding their names."""
    columns = [batch[name].to_pylist() for name in ("dataset", "image_id", "image_url", "caption_id")]
    return pa.array(
        np.fromiter(
            (hash(f"{dataset}:{image_id}" if image_id else f"url:{url}" if url else f"caption:{caption_id}")
             for dataset, image_id, url, caption_id in zip(*columns)),
            dtype=np.int64, count=batch.num_rows,
        )
    )


def scan_rows(rows: list[dict]) -> Scanned:
    """``Scanned`` of rows held as dicts (``Audited.rows``): one part, the list itself."""
    scanner = _Scanner()
    scanner.add(pa.Table.from_pylist(rows, schema=_ROW_SCHEMA), 0, 0)
    return scanner.scanned(lambda located: [rows[row] for _, row in located])


def _open(path: str):
    stream = FileSystems.open(path)
    if stream.seekable():
        return stream
    with stream:  # a filesystem whose streams cannot seek: the file is read whole
        return io.BytesIO(stream.read())


def _parquet(stream) -> pq.ParquetFile:
    # Column chunks are read a buffer at a time, not whole: a row group of a large shard holds
    # hundreds of megabytes of texts. The caller closes it (``with``): a reader that Python
    # collects only at exit can abort the interpreter there (apache/arrow#34314).
    return pq.ParquetFile(stream, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)


class _Part(NamedTuple):
    path: str
    outcome: str
    columns: list


def _scan_part(scanner: _Scanner, index: int, part: _Part) -> None:
    with _open(part.path) as stream, _parquet(stream) as parquet:
        first_row = 0
        for batch in parquet.iter_batches(BATCH_ROWS, columns=part.columns):
            rows = _with_outcome(pa.Table.from_batches([batch]), part.outcome)
            scanner.add(rows, index, first_row)
            first_row += batch.num_rows


def _with_outcome(table: pa.Table, outcome: str) -> pa.Table:
    """``table`` as ``_ROW_SCHEMA``: accepted rows have no stage or reason."""
    columns = {}
    for field in _ROW_SCHEMA:
        if field.name in table.column_names:
            columns[field.name] = table[field.name]
        elif field.name == "outcome":
            columns[field.name] = pa.repeat(pa.scalar(outcome), table.num_rows)
        else:
            columns[field.name] = pa.nulls(table.num_rows, field.type)
    return pa.table(columns, schema=_ROW_SCHEMA)


def _fetch_parts(parts: list[_Part], located: list) -> list[dict]:
    """The full rows at ``located`` ((part, row) pairs), in that order: only the row groups that
    hold them are read."""
    found = {}
    for index in sorted({part for part, _ in located}):
        part = parts[index]
        wanted = sorted({row for at, row in located if at == index})
        with _open(part.path) as stream, _parquet(stream) as parquet:
            starts = np.cumsum([0] + [parquet.metadata.row_group(i).num_rows
                                      for i in range(parquet.num_row_groups)])
            groups = {int(np.searchsorted(starts, row, side="right")) - 1 for row in wanted}
            for group in sorted(groups):
                table = parquet.read_row_group(group, columns=part.columns)
                table = _with_outcome(table, part.outcome)
                for row in wanted:
                    if starts[group] <= row < starts[group + 1]:
                        found[(index, row)] = table.slice(row - starts[group], 1).to_pylist()[0]
    return [found[(part, row)] for part, row in located]


def load(root: str) -> Audited:
    """The rows (``Scanned``), counts and run facts of the output directory ``root`` (any Beam
    filesystem URI). The rows are read a batch at a time, only the columns the audit needs."""
    root = root.rstrip("/")
    counts_path = f"{root}/{COUNTS_FILE}"
    if not FileSystems.exists(counts_path):
        raise InputError(f"{root}: not a finished polycap output ({COUNTS_FILE} is missing)")
    with FileSystems.open(counts_path) as stream:
        counted = json.loads(stream.read().decode("utf-8"))
    parts = []
    for outcome, pattern, columns in (
        (ACCEPTED, "accepted/lang=*/*.parquet", _COLUMNS),
        (REJECTED, "rejected/*.parquet", _COLUMNS + ["stage", "reason"]),
        (FAILED, "failed/*.parquet", _COLUMNS + ["stage", "reason"]),
    ):
        matches = FileSystems.match([f"{root}/{pattern}"])[0].metadata_list
        parts += [_Part(m.path, outcome, columns) for m in sorted(matches, key=lambda m: m.path)]
    scanner = _Scanner()
    for index, part in enumerate(parts):
        _scan_part(scanner, index, part)
    scanned = scanner.scanned(lambda located: _fetch_parts(parts, located))
    return Audited(root, "run", scanned, counted, runfacts.read(root))


# ---------------------------------------------------------------------------------- numbers


def _rows_of(groups: Iterable[dict]) -> int:
    return sum(group["rows"] for group in groups)


def _counts(groups: Iterable[dict], key: str) -> dict:
    counts: Counter = Counter()
    for group in groups:
        counts[group[key]] += group["rows"]
    return dict(sorted(counts.items()))


def _similarity_edges(scores: np.ndarray) -> list[float]:
    """Bins of ``SIMILARITY_BIN`` from 0 (or below the lowest score) to 1 (or above the highest:
    a margin)."""
    low = min(0.0, float(scores.min())) if len(scores) else 0.0
    low = math.floor(low * 10) / 10
    high = max(1.0, math.ceil(float(scores.max()) * 10) / 10) if len(scores) else 1.0
    steps = round((high - low) / SIMILARITY_BIN)
    return [round(low + SIMILARITY_BIN * step, 4) for step in range(steps + 1)]


def _floats(column) -> np.ndarray:
    return column.drop_null().to_numpy().astype(float, copy=False)


def threshold_rule(run: dict) -> dict:
    """The keep rule of the run, from its config: ``{"min_similarity": x}``,
    ``{"keep_top_fraction": f}`` (and ``memory_share``), with the score it applies to
    (``"score"``: ``cosine``, or ``margin`` with ``score.margin``); {} when the run facts do
    not say."""
    config = run.get("config", {})
    keep = config.get("keep", {})
    rules = ("min_similarity", "keep_top_fraction", "memory_share")  # not the checks' switches
    rule = {name: keep[name] for name in rules if keep.get(name) is not None}
    if rule:
        rule["score"] = MARGIN if config.get("score", {}).get("margin") else COSINE
    return rule


def scored_by(rule: dict, pairs: pa.Table, fetch: Callable[[list], list]) -> tuple:
    """(``pairs``, ``fetch``) with ``similarity`` holding the score the keep rule decided on: with
    ``score.margin`` the margin, and the fetched rows keep the cosine as ``cosine``. Every
    number, example and law of a language then speaks of that score."""
    if rule.get("score") != MARGIN:
        return pairs, fetch
    pairs = pairs.set_column(pairs.schema.get_field_index("similarity"), "similarity", pairs["margin"])
    return pairs, lambda located: [
        {**row, "similarity": row["margin"], "cosine": row["similarity"]} for row in fetch(located)
    ]


def length_ratios(pairs: pa.Table) -> np.ndarray:
    """Characters of the translation per character of the source (``source_chars``,
    ``translated_chars``: ``utf8_length``), where both texts are there and the source is not
    empty."""
    source, translated = pairs["source_chars"], pairs["translated_chars"]
    usable = pc.and_(pc.fill_null(pc.greater(source, 0), False), pc.is_valid(translated))
    source, translated = _floats(source.filter(usable)), _floats(translated.filter(usable))
    return translated / source


def _example(row: dict) -> dict:
    example = {
        "caption_id": row["caption_id"],
        "dataset": row["dataset"],
        "source_text": row["source_text"],
        "translated_text": row["translated_text"],
        "similarity": round(row["similarity"], 4),
        "outcome": (
            row["outcome"] if row["reason"] is None else f"{row['outcome']}: {row['reason']}"
        ),
    }
    if row.get("cosine") is not None:  # the score above is the margin (``scored_by``)
        example["cosine"] = round(row["cosine"], 4)
    return example


def _located(table: pa.Table, order) -> list:
    picked = table.take(pa.array(order, type=pa.int64()))
    return list(zip(picked["part"].to_pylist(), picked["row"].to_pylist()))


def examples(judged: pa.Table, threshold: Optional[float], fetch: Callable[[list], list]) -> dict:
    """The best, borderline (nearest ``threshold``) and worst scored pairs of ``judged``
    (``Scanned.sampled`` rows), deterministic: ties go by caption_id. Only these rows' texts are
    read (``fetch``)."""
    ranked = pc.sort_indices(
        judged, sort_keys=[("similarity", "descending"), ("caption_id", "ascending")]
    ).to_numpy()
    best = ranked[:EXAMPLES]
    worst = ranked[-EXAMPLES:][::-1] if len(ranked) else ranked
    nearest = np.array([], dtype=np.int64)
    if threshold is not None:
        distance = judged.append_column(
            "distance", pc.abs(pc.subtract(judged["similarity"], threshold))
        )
        nearest = pc.sort_indices(
            distance, sort_keys=[("distance", "ascending"), ("caption_id", "ascending")]
        ).to_numpy()[:EXAMPLES]
    located = [_located(judged, order) for order in (best, nearest, worst)]
    rows = fetch([at for group in located for at in group])
    best_rows, nearest_rows = rows[: len(best)], rows[len(best) : len(best) + len(nearest)]
    worst_rows = rows[len(best) + len(nearest) :]
    borderline = sorted(nearest_rows, key=lambda row: -row["similarity"])
    return {
        "best": [_example(row) for row in best_rows],
        "borderline": [_example(row) for row in borderline],
        "worst": [_example(row) for row in worst_rows],
    }


def check_examples(pairs: pa.Table, fetch: Callable[[list], list]) -> dict:
    """{reason: up to ``EXAMPLES`` pairs} for each pair check (``checks.CheckReason``) that
    rejected some of ``pairs`` (one language's ``Scanned.sampled`` rows), the smallest
    caption_ids first. Only these rows' texts are read (``fetch``)."""
    found = {}
    for reason in CheckReason:
        rejected = pairs.filter(pc.fill_null(pc.equal(pairs["reason"], reason.value), False))
        if rejected.num_rows:
            order = pc.sort_indices(rejected, sort_keys=[("caption_id", "ascending")])
            found[reason.value] = [
                _example(row)
                for row in fetch(_located(rejected, order.to_numpy()[:EXAMPLES]))
                if row["similarity"] is not None
            ]
    return found


def _pair_checks(languages: dict) -> dict:
    """{check reason: {language: pairs it rejected}}, every check and configured language."""
    return {
        reason.value: {
            lang: numbers["rejected_by_reason"].get(reason.value, 0)
            for lang, numbers in languages.items()
        }
        for reason in CheckReason
    }


def _language(groups: list[dict], pairs: pa.Table, sampled: int, eligible: int, rule: dict,
              fetch: Callable[[list], list]) -> dict:
    """The numbers of one language: ``groups`` are its counts, ``pairs`` its ``Scanned.sampled``
    rows."""
    accepted, rejected, failed = (
        [group for group in groups if group["outcome"] == outcome]
        for outcome in (ACCEPTED, REJECTED, FAILED)
    )
    outcome = pairs["outcome"]
    is_accepted = pc.equal(outcome, ACCEPTED)
    scored = pairs.filter(
        pc.and_(pc.or_(is_accepted, pc.equal(outcome, REJECTED)), pc.is_valid(pairs["similarity"]))
    )
    scored_accepted = pc.equal(scored["outcome"], ACCEPTED)
    # Untranslated pairs score near 1.0 against themselves; they say nothing about quality.
    judged = scored.filter(pc.invert(scored["untranslated"]))
    scores = _floats(scored["similarity"])
    edges = _similarity_edges(scores)
    ratios = length_ratios(judged)
    accepted_scores = _floats(pairs["similarity"].filter(is_accepted))
    n_accepted = _rows_of(accepted)
    threshold = rule.get("min_similarity")
    if threshold is None and "keep_top_fraction" in rule and n_accepted:
        threshold = float(accepted_scores.min())  # where the top fraction ended
    return {
        "sampled": sampled,
        "not_sampled": eligible - sampled,
        "accepted": n_accepted,
        "distinct_images": pc.count_distinct(pairs["image"].filter(is_accepted)).as_py(),
        "rejected": _rows_of(rejected),
        "rejected_by_reason": _counts(rejected, "reason"),
        "failed": _rows_of(failed),
        "failed_by_reason": _counts(failed, "reason"),
        "similarity_quantiles": quantiles(scores),
        "accepted_similarity_quantiles": quantiles(accepted_scores),
        "scored": scored.num_rows,
        "acceptance_rate": round(n_accepted / sampled, 4) if sampled else None,
        "untranslated": _rows_of(group for group in rejected if group["reason"] == UNTRANSLATED),
        "threshold": threshold,
        "similarity_histogram": {
            "edges": edges,
            ACCEPTED: histogram(_floats(scored["similarity"].filter(scored_accepted)), edges),
            REJECTED: histogram(
                _floats(scored["similarity"].filter(pc.invert(scored_accepted))), edges
            ),
        },
        "length_ratio_quantiles": quantiles(ratios),
        "length_ratio_histogram": {
            "edges": LENGTH_RATIO_EDGES,
            "counts": histogram(ratios, LENGTH_RATIO_EDGES),
        },
        "examples": examples(judged, threshold, fetch),
        "check_examples": check_examples(pairs, fetch),
    }


def _ratio_per_caption(sampled: pa.Table) -> np.ndarray:
    """The PROPN ratio of every sampled caption that has one, once per caption (one sampled
    into several languages is one caption): the ratio of its last row."""
    tagged = sampled.select(["caption_id", "propn_ratio"])
    tagged = tagged.filter(pc.is_valid(tagged["propn_ratio"]))
    if not tagged.num_rows:
        return np.array([], dtype=float)
    # A stable sort keeps a caption's rows in their order: its last row ends its run of ids.
    order = pc.sort_indices(tagged, sort_keys=[("caption_id", "ascending")])
    ids = tagged["caption_id"].take(order)
    last = pc.not_equal(ids[:-1], ids[1:]).to_numpy(zero_copy_only=False)
    last = np.append(last, True)
    return _floats(tagged["propn_ratio"].take(order))[last]


def _propn(scanned: Scanned, run: dict) -> dict:
    """PROPN ratios: every caption the filter removed, and the sampled captions (a uniform sample
    of those it kept: the rest never reach the files)."""
    removed = scanned.removed
    order = pc.sort_indices(
        removed.append_column("key", pc.fill_null(removed["propn_ratio"], 1.0)),
        sort_keys=[("key", "ascending"), ("caption_id", "ascending")],
    ).to_numpy()
    shown = np.concatenate([order[:EXAMPLES], order[max(EXAMPLES, len(order) - EXAMPLES) :]])
    kept = _ratio_per_caption(scanned.sampled)
    return {
        "max_propn_ratio": run.get("config", {}).get("propn", {}).get("max_propn_ratio"),
        "removed": removed.num_rows,
        "sampled_captions": len(kept),
        "histogram": {
            "edges": PROPN_EDGES,
            "removed": histogram(_floats(removed["propn_ratio"]), PROPN_EDGES),
            "sampled": histogram(kept, PROPN_EDGES),
        },
        "sampled_quantiles": quantiles(kept),
        "removed_examples": [
            {
                "caption_id": row["caption_id"],
                "dataset": row["dataset"],
                "text": row["source_text"],
                "propn_ratio": row["propn_ratio"],
            }
            for row in scanned.fetch(_located(removed, shown))
        ],
    }


def _datasets(groups: list[dict], languages: list[str]) -> dict:
    """Per source dataset: what was removed before sampling, and what reached each language."""
    found: dict = defaultdict(
        lambda: {"invalid": 0, "duplicate": 0, "propn": 0, "failed": 0,
                 "sampled": dict.fromkeys(languages, 0), "accepted": dict.fromkeys(languages, 0)}
    )
    early_kinds = {Stage.DEDUPLICATE.value: "duplicate", Stage.PROPN.value: "propn"}
    for group in groups:
        numbers = found[group["dataset"]]
        lang = group["target_lang"]
        if lang is None:
            kind = early_kinds.get(group["stage"], "invalid")
            kind = "failed" if group["outcome"] == FAILED else kind
            numbers[kind] += group["rows"]
        elif lang in numbers["sampled"]:
            numbers["sampled"][lang] += group["rows"]
            numbers[ACCEPTED][lang] += group["rows"] if group["outcome"] == ACCEPTED else 0
    for numbers in found.values():
        numbers["accepted_total"] = sum(numbers[ACCEPTED].values())
    return {name: found[name] for name in sorted(found)}


def _cost(characters: int, price: Optional[float]) -> Optional[float]:
    if not characters:
        return 0.0
    return None if price is None else round(characters * price / 1e6, 4)


# The providers that bill characters; a local model (ctranslate2) costs worker hours instead.
_BILLING = frozenset(provider.value for provider in OnlineProvider if provider.bills)


def _language_providers(counted: dict, translation_cfg: dict) -> dict[str, tuple]:
    """Language -> (its provider, USD per million characters), from ``counts.json``
    ``providers``; an output that predates them had one provider and price for every language."""
    if "providers" in counted:
        return {lang: (numbers["provider"], numbers["price_per_million_chars"])
                for lang, numbers in counted["providers"].items()}
    provider = counted.get("provider", translation_cfg.get("provider"))
    price = counted.get("price_per_million_chars", translation_cfg.get("price_per_million_chars"))
    return dict.fromkeys(counted["languages"], (provider, price))


def _billed_by_language(counted: dict, providers: dict[str, tuple]) -> Counter:
    """Characters this run paid for, per target language: the store rows it wrote, in every
    provider's folder (a provider bills only what it answered; a replayed batch is read back
    from the store, not re-billed), of the languages whose provider bills."""
    billed: Counter = Counter()
    billing = {lang for lang, (provider, _) in providers.items() if provider in _BILLING}
    if not billing or not counted.get("store"):
        return billed
    for row in read_store_rows(counted["store"], "*", run_id=counted["run_id"]):
        if row["target_lang"] in billing:
            billed[row["target_lang"]] += row["characters"]
    return billed


def _translation(groups: list[dict], counted: dict, run: dict) -> dict:
    """Per language: its provider, memory and store hits, provider calls, characters billed,
    estimated cost; and the bill of each provider.

    Where the pipeline counted its look-ups (``counts.json`` ``translation``: distinct texts
    found in the memory, in the store, or missed and sent to the provider, with the characters
    sent), those are the numbers. An output without them is estimated from its rows: a row from
    a cache provider is a hit, any other a call billed by its source characters (store hits
    cannot be told from calls there). ``pairs_by_provider`` always comes from the files."""
    pairs: dict = defaultdict(lambda: defaultdict(lambda: {"pairs": 0, "characters": 0}))
    for group in groups:
        if group["provider"] is not None and group["target_lang"] is not None:
            numbers = pairs[group["provider"]][group["target_lang"]]
            numbers["pairs"] += group["rows"]
            numbers["characters"] += group["characters"]
    providers = _language_providers(counted, run.get("config", {}).get("translation", {}))
    lookups = counted.get("translation")
    billed_by_language = _billed_by_language(counted, providers)
    languages = {}
    for lang in counted["languages"]:
        provider, price = providers[lang]
        if lookups is not None:
            found = lookups.get(lang, {})
            calls = found.get("miss", 0) if provider not in (None, "none") else 0
            billed = billed_by_language.get(lang, 0)
            hits = {"memory_hits": found.get("memory", 0), "store_hits": found.get("store", 0)}
        else:
            here = {name: numbers[lang] for name, numbers in pairs.items() if lang in numbers}
            paid = [numbers for name, numbers in here.items() if name not in CACHE_PROVIDERS]
            calls = sum(numbers["pairs"] for numbers in paid)
            billed = sum(numbers["characters"] for numbers in paid)
            cached = [numbers["pairs"] for name, numbers in here.items() if name in CACHE_PROVIDERS]
            hits = {"memory_hits": sum(cached), "store_hits": None}  # unknown in the rows
        languages[lang] = {"provider": provider, **hits, "provider_calls": calls,
                           "characters_billed": billed, "estimated_cost_usd": _cost(billed, price)}
    totals = {}
    for key in ("memory_hits", "store_hits", "provider_calls", "characters_billed",
                "estimated_cost_usd"):
        values = [numbers[key] for numbers in languages.values()]
        totals[key] = None if None in values else round(sum(values), 4)
    untranslatable = [
        group for group in groups
        if group["stage"] == Stage.TRANSLATE.value and group["outcome"] == FAILED
    ]
    counters = run.get("metrics", {}).get("counters", {})
    return {
        "budget": _budget(counted, groups, totals["characters_billed"]),
        "by_provider": _bills(languages, providers),
        "counted_by": "pipeline" if lookups is not None else "output rows (estimate)",
        "languages": languages,
        "totals": totals,
        "pairs_by_provider": {name: dict(sorted(pairs[name].items())) for name in sorted(pairs)},
        "no_translation": _counts(untranslatable, "target_lang"),
        "reported_by_runner": counters.get(Stage.TRANSLATE.value, {}),
    }


def _bills(languages: dict, providers: dict[str, tuple]) -> dict:
    """Provider -> its price, its languages, and the characters billed and cost over them."""
    bills: dict = {}
    for lang, numbers in languages.items():
        provider, price = providers[lang]
        bill = bills.setdefault(str(provider), {"usd_per_million_characters": price, "languages": [],
                                                "characters_billed": 0})
        bill["languages"].append(lang)
        bill["characters_billed"] += numbers["characters_billed"]
    for bill in bills.values():
        bill["estimated_cost_usd"] = _cost(bill["characters_billed"], bill["usd_per_million_characters"])
    return bills


def _budget(counted: dict, groups: list[dict], billed: Optional[int]) -> Optional[dict]:
    """The spending cap: the cap, what this run was billed (its store rows) and what is left, and
    per language the pairs and characters it funded and left out (``over_budget``)."""
    cap = counted.get("max_characters")
    if cap is None:
        return None
    planned = counted.get("budget", {})
    over = [group for group in groups if group["reason"] == TranslateReason.OVER_BUDGET.value]
    return {
        "max_characters": cap,
        "spent": billed,
        "left": None if billed is None else cap - billed,
        "languages": {
            lang: {
                "funded_characters": planned.get(lang, {}).get("funded_characters", 0),
                "over_budget_characters": planned.get(lang, {}).get("over_budget_characters", 0),
                "over_budget_pairs": _rows_of(group for group in over if group["target_lang"] == lang),
            }
            for lang in counted["languages"]
        },
    }


# Rejects and failures before sampling, counted twice: as rows in the files, and by the stage's
# own Beam counters (namespace: the stage, name: the reason), which the runner reports.
_EARLY_STAGES = (Stage.READ, Stage.CLEAN, Stage.DEDUPLICATE, Stage.PROPN)


def _counter_checks(early: list[dict], run: dict) -> dict:
    """``files = counters`` per early stage and reason, where the runner reported its counters:
    two independent counts of the same rows (a row lost between a stage and the files, or
    written twice, shows here). {} where the runner reports no counters."""
    counters = run.get("metrics", {}).get("counters", {})
    if not counters:
        return {}
    in_files: Counter = Counter()
    for group in early:
        in_files[(group["stage"], group["reason"])] += group["rows"]
    checks = {}
    for stage in _EARLY_STAGES:
        counted = counters.get(stage.value, {})
        reasons = {reason for (name, reason) in in_files if name == stage.value}
        for reason in sorted(reasons | {name for name in counted if name in _REASONS[stage]}):
            checks[f"{stage.value} {reason}: rows in the files = the stage's counter"] = (
                in_files[(stage.value, reason)] == counted.get(reason, 0)
            )
    return checks


def analyse(audited: Audited) -> dict:
    """Every number of the report, from ``audited``. See the module docstring for the laws."""
    counted, run = audited.counted, audited.run
    scanned = audited.rows if isinstance(audited.rows, Scanned) else scan_rows(audited.rows)
    groups = scanned.groups
    early = [group for group in groups if group["target_lang"] is None]
    early_rejects = [group for group in early if group["outcome"] == REJECTED]
    early_failures = [group for group in early if group["outcome"] == FAILED]
    invalid = [group for group in early_rejects if group["stage"] in _INVALID_STAGES]
    source = {
        "read": counted["read"],
        "invalid": _rows_of(invalid),
        "invalid_by_reason": _counts(invalid, "reason"),
        "duplicate": _rows_of(g for g in early_rejects if g["stage"] == Stage.DEDUPLICATE.value),
        "propn": _rows_of(g for g in early_rejects if g["stage"] == Stage.PROPN.value),
        "failed": _rows_of(early_failures),
        "failed_by_reason": _counts(early_failures, "reason"),
        # input files read only up to a break: their rest is not in the dataset
        "unreadable_files": sorted(
            caption_id.removeprefix(UNREADABLE_ID_PREFIX) for caption_id in scanned.unreadable
        ),
        "eligible": counted["eligible"],
        # eligible captions never POS-tagged: sampling could not choose them (preselect.py)
        "untagged": counted.get("untagged", 0),
    }
    removed = source["invalid"] + source["duplicate"] + source["propn"]
    checks = {}
    if audited.mode == "run":
        checks["read = invalid + duplicate + propn + failed + eligible"] = (
            source["read"] == removed + source["failed"] + source["eligible"]
        )
        checks.update(_counter_checks(early, run))

    rule = threshold_rule(run)
    # keep.memory_share: the thresholds the memory's human translations raised, per language
    raised = counted.get("thresholds", {})
    sampled_rows = scanned.sampled
    languages = {}
    for lang in counted["languages"]:
        sampled = counted["sampled"].get(lang, 0)
        pairs, fetch = scored_by(
            rule, sampled_rows.filter(pc.equal(sampled_rows["target_lang"], lang)), scanned.fetch
        )
        lang_rule = {**rule, "min_similarity": raised[lang]["min_similarity"]} if lang in raised else rule
        languages[lang] = n = _language(
            [group for group in groups if group["target_lang"] == lang],
            pairs, sampled, source["eligible"], lang_rule, fetch,
        )
        n["threshold_from"] = (
            {"memory": raised[lang]["human_pairs"], "share": rule.get("memory_share")}
            if lang in raised else "config"
        )
        checks[f"{lang}: sampled = accepted + rejected + failed"] = (
            sampled == n["accepted"] + n["rejected"] + n["failed"]
        )
        checks[f"{lang}: no caption is in the files twice"] = (
            pc.count_distinct(pairs["caption_id"], mode="all").as_py() == pairs.num_rows
        )
        if "min_similarity" in rule:
            accepted = pairs["similarity"].filter(pc.equal(pairs["outcome"], ACCEPTED))
            checks[f"{lang}: every accepted pair scores at least min_similarity"] = (
                accepted.null_count == 0
                and bool(_floats(accepted).min(initial=math.inf) >= lang_rule["min_similarity"])
            )
        fill = counted.get("fill", {}).get(lang)
        if fill is not None:
            # The rounds' counts of what keep accepted, against the rows the fill's cut wrote.
            checks[f"{lang}: the fill's accepted count = accepted rows"] = fill["accepted"] == n["accepted"]
    stray = {group["target_lang"] for group in groups if group["target_lang"] is not None}
    stray -= set(languages)
    checks["no rows for unconfigured languages"] = not stray

    translation = _translation(groups, counted, run)
    budget = translation["budget"]
    if budget is not None and budget["spent"] is not None:
        checks["billed (the run's store rows) <= translation.max_characters"] = budget["left"] >= 0
    if audited.mode == "run":
        # Sampling can never choose a caption the PROPN stage left untagged (propn.py).
        untagged = sampled_rows["propn_ratio"].null_count
        checks["no sampled caption was left untagged"] = untagged == 0
    else:
        # A parallel set has no counts of its own to check its rows against: no laws, and the
        # report says so instead of "All checks hold".
        checks = {}
    return {
        "output": audited.output,
        "mode": audited.mode,
        "keep_rule": rule,
        "input": source,
        "languages": languages,
        "pair_checks": _pair_checks(languages),
        "propn": _propn(scanned, run),
        "datasets": _datasets(groups, list(counted["languages"])),
        "translation": translation,
        "fill": counted.get("fill"),
        "run": run,
        # What the pipeline itself recorded about the run in counts.json, beside the counts.
        "pipeline_facts": {key: counted[key] for key in ("run_id", "store") if key in counted},
        "checks": checks,
        "ok": all(checks.values()),
    }


def compute(root: str) -> dict:
    """The audit of the output directory ``root`` (any Beam filesystem URI)."""
    return analyse(load(root))


# ---------------------------------------------------------------------------------- writing


def write_report(root: str, audit: dict) -> dict:
    """Write ``audit`` as ``audit/audit.json`` and ``audit/audit.html`` under ``root``."""
    from polycap.report import html_page

    root = root.rstrip("/")
    for path, text in (
        (f"{root}/{AUDIT_JSON}", json.dumps(audit, indent=2, ensure_ascii=False)),
        (f"{root}/{AUDIT_HTML}", html_page.render(audit)),
    ):
        with FileSystems.create(path) as stream:
            stream.write(text.encode("utf-8"))
    if not audit["ok"]:
        broken = [name for name, holds in audit["checks"].items() if not holds]
        log.error("audit of %s: broken checks: %s", root, "; ".join(broken))
    return audit


def write(root: str) -> dict:
    """Compute the audit of ``root`` and write ``audit/audit.json`` and ``audit/audit.html``."""
    return write_report(root, compute(root))
