"""The audit of a finished output directory: what was read, removed at each stage and why,
sampled, accepted, rejected and failed per language, what the scores look like and what the
translations cost, computed from the Parquet files themselves.

The pipeline's own counts (``audit/counts.json``: read, eligible, sampled per language) are
checked against the rows in the files: ``read = invalid + duplicate + propn + failed + eligible``
and, per language, ``sampled = accepted + rejected + failed``. A broken law is a bug, and the
audit says so in ``checks``. The run's facts (``audit/run.json``, written by ``polycap run``:
config, versions, runner, times) give the thresholds the report draws.

``audit.json`` holds every number of the report; ``audit.html`` (``pipeline/report.py``) only
draws and lays them out. Memory: the audit holds the columns it needs of every row of the output
(ids, texts, scores; not URLs or errors) on the driver, a few hundred bytes per row.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter, defaultdict
from typing import Iterable, NamedTuple, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from polycap.report import runfacts
from polycap.report.stats import histogram, quantiles
from polycap.transforms.errors import InputError
from polycap.transforms.keep import Reason as KeepReason
from polycap.transforms import clean, deduplicate, propn, read
from polycap.transforms.read import UNREADABLE_ID_PREFIX
from polycap.transforms.read import Reason as ReadReason
from polycap.transforms.records import Stage
from polycap.transforms.store import read_store_rows
from polycap.transforms.write import ACCEPTED_SCHEMA, COUNTS_FILE, FAILED_SCHEMA, REJECTED_SCHEMA

AUDIT_JSON = "audit/audit.json"
AUDIT_HTML = "audit/audit.html"
_INVALID_STAGES = {Stage.READ.value, Stage.CLEAN.value}
UNTRANSLATED = KeepReason.UNTRANSLATED.value
LOW_SIMILARITY = KeepReason.LOW_SIMILARITY.value

EXAMPLES = 5  # pairs shown as best, borderline and worst per language; PROPN removals twice that
SIMILARITY_BIN = 0.025
LENGTH_RATIO_EDGES = [round(0.1 * step, 1) for step in range(31)]  # 0.0 .. 3.0; more counts as 3.0
PROPN_EDGES = [round(0.05 * step, 2) for step in range(21)]  # 0.0 .. 1.0

_COLUMNS = ["caption_id", "dataset", "target_lang", "source_text", "translated_text", "provider",
            "similarity", "propn_ratio"]
ACCEPTED, REJECTED, FAILED = "accepted", "rejected", "failed"
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


class Audited(NamedTuple):
    """What an audit is computed from. ``rows``: every output row as a dict of ``_COLUMNS`` plus
    ``outcome`` (accepted / rejected / failed), ``stage`` and ``reason`` (None when accepted);
    ``counted``: the pipeline's counts (``read``, ``eligible``, ``languages``, ``sampled``);
    ``run``: the run facts (``runfacts``), {} when unknown."""

    output: str
    mode: str  # "run": a polycap output directory; "pairs": a parallel set scored by the audit
    rows: list
    counted: dict
    run: dict


# ---------------------------------------------------------------------------------- reading


def _read_table(pattern: str, schema: pa.Schema, columns: list[str]) -> pa.Table:
    matches = FileSystems.match([pattern])[0].metadata_list
    tables = []
    for metadata in sorted(matches, key=lambda m: m.path):
        with FileSystems.open(metadata.path) as stream:
            tables.append(pq.read_table(io.BytesIO(stream.read()), columns=columns))
    if not tables:
        return schema.empty_table().select(columns)
    return pa.concat_tables(tables)


def _rows(table: pa.Table, outcome: str) -> list[dict]:
    rows = table.to_pylist()
    for row in rows:
        row["outcome"] = outcome
        row.setdefault("stage", None)
        row.setdefault("reason", None)
    return rows


def load(root: str) -> Audited:
    """The rows, counts and run facts of the output directory ``root`` (any Beam filesystem URI)."""
    root = root.rstrip("/")
    counts_path = f"{root}/{COUNTS_FILE}"
    if not FileSystems.exists(counts_path):
        raise InputError(f"{root}: not a finished polycap output ({COUNTS_FILE} is missing)")
    with FileSystems.open(counts_path) as stream:
        counted = json.loads(stream.read().decode("utf-8"))
    rows = []
    for outcome, pattern, schema, columns in (
        (ACCEPTED, "accepted/lang=*/*.parquet", ACCEPTED_SCHEMA, _COLUMNS),
        (REJECTED, "rejected/*.parquet", REJECTED_SCHEMA, _COLUMNS + ["stage", "reason"]),
        (FAILED, "failed/*.parquet", FAILED_SCHEMA, _COLUMNS + ["stage", "reason"]),
    ):
        rows += _rows(_read_table(f"{root}/{pattern}", schema, columns), outcome)
    return Audited(root, "run", rows, counted, runfacts.read(root))


# ---------------------------------------------------------------------------------- numbers


def _counts(column: Iterable) -> dict:
    return dict(sorted(Counter(column).items()))


def _similarity_edges(scores: list[float]) -> list[float]:
    low = min([0.0, *scores])
    low = math.floor(low * 10) / 10
    steps = round((1.0 - low) / SIMILARITY_BIN)
    return [round(low + SIMILARITY_BIN * step, 4) for step in range(steps + 1)]


def threshold_rule(run: dict) -> dict:
    """The keep rule of the run, from its config: ``{"min_similarity": x}``,
    ``{"keep_top_fraction": f}`` or {} when the run facts do not say."""
    keep = run.get("config", {}).get("keep", {})
    return {name: value for name, value in keep.items() if value is not None}


def length_ratio(row: dict) -> Optional[float]:
    """Characters of the translation per character of the source."""
    source, translated = row["source_text"], row["translated_text"]
    if not source or translated is None:
        return None
    return len(translated) / len(source)


def _example(row: dict) -> dict:
    return {
        "caption_id": row["caption_id"],
        "dataset": row["dataset"],
        "source_text": row["source_text"],
        "translated_text": row["translated_text"],
        "similarity": round(row["similarity"], 4),
        "outcome": (
            row["outcome"] if row["reason"] is None else f"{row['outcome']}: {row['reason']}"
        ),
    }


def examples(judged: list[dict], threshold: Optional[float]) -> dict:
    """The best, borderline (nearest ``threshold``) and worst scored pairs, deterministic."""
    ranked = sorted(judged, key=lambda row: (-row["similarity"], row["caption_id"]))
    borderline = []
    if threshold is not None:
        nearest = sorted(
            ranked, key=lambda row: (abs(row["similarity"] - threshold), row["caption_id"])
        )
        borderline = sorted(nearest[:EXAMPLES], key=lambda row: -row["similarity"])
    return {
        "best": [_example(row) for row in ranked[:EXAMPLES]],
        "borderline": [_example(row) for row in borderline],
        "worst": [_example(row) for row in reversed(ranked[-EXAMPLES:])],
    }


def _language(lang: str, rows: list[dict], sampled: int, eligible: int, rule: dict) -> dict:
    accepted = [row for row in rows if row["outcome"] == ACCEPTED]
    rejected = [row for row in rows if row["outcome"] == REJECTED]
    failed = [row for row in rows if row["outcome"] == FAILED]
    scored = [row for row in accepted + rejected if row["similarity"] is not None]
    # Untranslated pairs score near 1.0 against themselves; they say nothing about quality.
    judged = [row for row in scored if row["reason"] != UNTRANSLATED]
    scores = [row["similarity"] for row in scored]
    edges = _similarity_edges(scores)
    ratios = [ratio for ratio in map(length_ratio, judged) if ratio is not None]
    threshold = rule.get("min_similarity")
    if threshold is None and "keep_top_fraction" in rule and accepted:
        threshold = min(row["similarity"] for row in accepted)  # where the top fraction ended
    return {
        "sampled": sampled,
        "not_sampled": eligible - sampled,
        "accepted": len(accepted),
        "rejected": len(rejected),
        "rejected_by_reason": _counts(row["reason"] for row in rejected),
        "failed": len(failed),
        "failed_by_reason": _counts(row["reason"] for row in failed),
        "similarity_quantiles": quantiles(scores),
        "accepted_similarity_quantiles": quantiles([row["similarity"] for row in accepted]),
        "scored": len(scored),
        "acceptance_rate": round(len(accepted) / sampled, 4) if sampled else None,
        "untranslated": sum(row["reason"] == UNTRANSLATED for row in rejected),
        "threshold": threshold,
        "similarity_histogram": {
            "edges": edges,
            ACCEPTED: histogram(
                [row["similarity"] for row in scored if row["outcome"] == ACCEPTED], edges
            ),
            REJECTED: histogram(
                [row["similarity"] for row in scored if row["outcome"] == REJECTED], edges
            ),
        },
        "length_ratio_quantiles": quantiles(ratios),
        "length_ratio_histogram": {
            "edges": LENGTH_RATIO_EDGES,
            "counts": histogram(ratios, LENGTH_RATIO_EDGES),
        },
        "examples": examples(judged, threshold),
    }


def _propn(early_rejects: list[dict], sampled_rows: list[dict], run: dict) -> dict:
    """PROPN ratios: every caption the filter removed, and the sampled captions (a uniform sample
    of those it kept: the rest never reach the files)."""
    removed = sorted(
        (row for row in early_rejects if row["stage"] == Stage.PROPN.value),
        key=lambda row: (
            row["propn_ratio"] if row["propn_ratio"] is not None else 1.0,
            row["caption_id"],
        ),
    )
    kept = {row["caption_id"]: row["propn_ratio"] for row in sampled_rows
            if row["propn_ratio"] is not None}
    shown = removed[:EXAMPLES] + removed[max(EXAMPLES, len(removed) - EXAMPLES) :]
    return {
        "max_propn_ratio": run.get("config", {}).get("propn", {}).get("max_propn_ratio"),
        "removed": len(removed),
        "sampled_captions": len(kept),
        "histogram": {
            "edges": PROPN_EDGES,
            "removed": histogram(
                [row["propn_ratio"] for row in removed if row["propn_ratio"] is not None],
                PROPN_EDGES,
            ),
            "sampled": histogram(list(kept.values()), PROPN_EDGES),
        },
        "sampled_quantiles": quantiles(list(kept.values())),
        "removed_examples": [
            {
                "caption_id": row["caption_id"],
                "dataset": row["dataset"],
                "text": row["source_text"],
                "propn_ratio": row["propn_ratio"],
            }
            for row in shown
        ],
    }


def _datasets(rows: list[dict], languages: list[str]) -> dict:
    """Per source dataset: what was removed before sampling, and what reached each language."""
    found: dict = defaultdict(
        lambda: {"invalid": 0, "duplicate": 0, "propn": 0, "failed": 0,
                 "sampled": dict.fromkeys(languages, 0), "accepted": dict.fromkeys(languages, 0)}
    )
    early_kinds = {Stage.DEDUPLICATE.value: "duplicate", Stage.PROPN.value: "propn"}
    for row in rows:
        numbers = found[row["dataset"]]
        lang = row["target_lang"]
        if lang is None:
            kind = early_kinds.get(row["stage"], "invalid")
            kind = "failed" if row["outcome"] == FAILED else kind
            numbers[kind] += 1
        elif lang in numbers["sampled"]:
            numbers["sampled"][lang] += 1
            numbers[ACCEPTED][lang] += row["outcome"] == ACCEPTED
    for numbers in found.values():
        numbers["accepted_total"] = sum(numbers[ACCEPTED].values())
    return {name: found[name] for name in sorted(found)}


def _cost(characters: int, price: Optional[float]) -> Optional[float]:
    if not characters:
        return 0.0
    return None if price is None else round(characters * price / 1e6, 4)


def _billed_by_language(counted: dict) -> Counter:
    """Characters this run paid for, per target language: the store rows it wrote (a provider
    bills only what it answered; a replayed batch is read back from the store, not re-billed)."""
    billed: Counter = Counter()
    if counted.get("provider") in (None, "none") or not counted.get("store"):
        return billed
    for row in read_store_rows(counted["store"], counted["provider"], run_id=counted["run_id"]):
        billed[row["target_lang"]] += row["characters"]
    return billed


def _translation(rows: list[dict], counted: dict, run: dict) -> dict:
    """Per language: memory and store hits, provider calls, characters billed, estimated cost.

    Where the pipeline counted its look-ups (``counts.json`` ``translation``: distinct texts
    found in the memory, in the store, or missed and sent to the provider, with the characters
    sent), those are the numbers. An output without them is estimated from its rows: a row from
    a cache provider is a hit, any other a call billed by its source characters (store hits
    cannot be told from calls there). ``pairs_by_provider`` always comes from the files."""
    pairs: dict = defaultdict(lambda: defaultdict(lambda: {"pairs": 0, "characters": 0}))
    for row in rows:
        if row["provider"] is not None and row["target_lang"] is not None:
            numbers = pairs[row["provider"]][row["target_lang"]]
            numbers["pairs"] += 1
            numbers["characters"] += len(row["source_text"] or "")
    translation_cfg = run.get("config", {}).get("translation", {})
    provider = counted.get("provider", translation_cfg.get("provider"))
    price = counted.get("price_per_million_chars", translation_cfg.get("price_per_million_chars"))
    lookups = counted.get("translation")
    billed_by_language = _billed_by_language(counted)
    languages = {}
    for lang in counted["languages"]:
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
        languages[lang] = {**hits, "provider_calls": calls, "characters_billed": billed,
                           "estimated_cost_usd": _cost(billed, price)}
    totals = {}
    for key in ("memory_hits", "store_hits", "provider_calls", "characters_billed",
                "estimated_cost_usd"):
        values = [numbers[key] for numbers in languages.values()]
        totals[key] = None if None in values else round(sum(values), 4)
    untranslatable = [
        row for row in rows if row["stage"] == Stage.TRANSLATE.value and row["outcome"] == FAILED
    ]
    counters = run.get("metrics", {}).get("counters", {})
    return {
        "provider": provider,
        "usd_per_million_characters": price,
        "counted_by": "pipeline" if lookups is not None else "output rows (estimate)",
        "languages": languages,
        "totals": totals,
        "pairs_by_provider": {name: dict(sorted(pairs[name].items())) for name in sorted(pairs)},
        "no_translation": _counts(row["target_lang"] for row in untranslatable),
        "reported_by_runner": counters.get(Stage.TRANSLATE.value, {}),
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
    in_files = Counter((row["stage"], row["reason"]) for row in early)
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
    counted, rows, run = audited.counted, audited.rows, audited.run
    early = [row for row in rows if row["target_lang"] is None]
    early_rejects = [row for row in early if row["outcome"] == REJECTED]
    early_failures = [row for row in early if row["outcome"] == FAILED]
    invalid = [row for row in early_rejects if row["stage"] in _INVALID_STAGES]
    source = {
        "read": counted["read"],
        "invalid": len(invalid),
        "invalid_by_reason": _counts(row["reason"] for row in invalid),
        "duplicate": sum(row["stage"] == Stage.DEDUPLICATE.value for row in early_rejects),
        "propn": sum(row["stage"] == Stage.PROPN.value for row in early_rejects),
        "failed": len(early_failures),
        "failed_by_reason": _counts(row["reason"] for row in early_failures),
        # input files read only up to a break: their rest is not in the dataset
        "unreadable_files": sorted(
            row["caption_id"].removeprefix(UNREADABLE_ID_PREFIX)
            for row in early_failures
            if row["reason"] == ReadReason.UNREADABLE_FILE.value
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
    by_language = defaultdict(list)
    for row in rows:
        if row["target_lang"] is not None:
            by_language[row["target_lang"]].append(row)
    languages = {}
    for lang in counted["languages"]:
        sampled = counted["sampled"].get(lang, 0)
        rows_of_lang = by_language[lang]
        languages[lang] = n = _language(lang, rows_of_lang, sampled, source["eligible"], rule)
        checks[f"{lang}: sampled = accepted + rejected + failed"] = (
            sampled == n["accepted"] + n["rejected"] + n["failed"]
        )
        ids = [row["caption_id"] for row in rows_of_lang]
        checks[f"{lang}: no caption is in the files twice"] = len(ids) == len(set(ids))
        if "min_similarity" in rule:
            checks[f"{lang}: every accepted pair scores at least min_similarity"] = all(
                row["similarity"] >= rule["min_similarity"]
                for row in rows_of_lang
                if row["outcome"] == ACCEPTED
            )
    stray = set(by_language) - set(languages)
    checks["no rows for unconfigured languages"] = not stray

    sampled_rows = [row for row in rows if row["target_lang"] is not None]
    if audited.mode == "run":
        # Sampling can never choose a caption the PROPN stage left untagged (propn.py).
        checks["no sampled caption was left untagged"] = all(
            row["propn_ratio"] is not None for row in sampled_rows
        )
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
        "propn": _propn(early_rejects, sampled_rows, run),
        "datasets": _datasets(rows, list(counted["languages"])),
        "translation": _translation(rows, counted, run),
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
    from polycap.report import html_page  # matplotlib loads only when a report is drawn

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
