"""The audit of a finished output directory: what was read, removed at each stage and why,
sampled, accepted, rejected and failed per language, computed from the Parquet files themselves.

The pipeline's own counts (``audit/counts.json``: read, eligible, sampled per language) are
checked against the rows in the files: ``read = invalid + duplicate + propn + failed + eligible``
and, per language, ``sampled = accepted + rejected + failed``. A broken law is a bug, and the
audit says so in ``checks``.
"""

from __future__ import annotations

import html
import io
import json
import logging
from collections import Counter
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.errors import InputError
from transforms.records import Stage
from transforms.write import ACCEPTED_SCHEMA, COUNTS_FILE, FAILED_SCHEMA, REJECTED_SCHEMA

AUDIT_JSON = "audit/audit.json"
AUDIT_HTML = "audit/audit.html"
QUANTILES = {"min": 0.0, "p10": 0.1, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p90": 0.9, "max": 1.0}
_INVALID_STAGES = {Stage.READ.value, Stage.CLEAN.value}

log = logging.getLogger(__name__)


def _read_table(pattern: str, schema: pa.Schema, columns: list[str]) -> pa.Table:
    matches = FileSystems.match([pattern])[0].metadata_list
    tables = []
    for metadata in sorted(matches, key=lambda m: m.path):
        with FileSystems.open(metadata.path) as stream:
            tables.append(pq.read_table(io.BytesIO(stream.read()), columns=columns))
    if not tables:
        return schema.empty_table().select(columns)
    return pa.concat_tables(tables)


def _counts(column: Iterable) -> dict:
    return dict(sorted(Counter(column).items()))


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {}
    return {name: round(float(np.quantile(values, q)), 4) for name, q in QUANTILES.items()}


def compute(root: str) -> dict:
    """The audit of the output directory ``root`` (any Beam filesystem URI)."""
    root = root.rstrip("/")
    counts_path = f"{root}/{COUNTS_FILE}"
    if not FileSystems.exists(counts_path):
        raise InputError(f"{root}: not a finished polycap output ({COUNTS_FILE} is missing)")
    with FileSystems.open(counts_path) as stream:
        counted = json.loads(stream.read().decode("utf-8"))

    accepted = _read_table(
        f"{root}/accepted/lang=*/*.parquet", ACCEPTED_SCHEMA, ["target_lang", "similarity"]
    ).to_pylist()
    rejected = _read_table(
        f"{root}/rejected/*.parquet",
        REJECTED_SCHEMA,
        ["target_lang", "similarity", "stage", "reason"],
    ).to_pylist()
    failed = _read_table(
        f"{root}/failed/*.parquet", FAILED_SCHEMA, ["target_lang", "stage", "reason"]
    ).to_pylist()

    early_rejects = [row for row in rejected if row["target_lang"] is None]
    early_failures = [row for row in failed if row["target_lang"] is None]
    invalid = [row for row in early_rejects if row["stage"] in _INVALID_STAGES]
    source = {
        "read": counted["read"],
        "invalid": len(invalid),
        "invalid_by_reason": _counts(row["reason"] for row in invalid),
        "duplicate": sum(row["stage"] == Stage.DEDUPLICATE.value for row in early_rejects),
        "propn": sum(row["stage"] == Stage.PROPN.value for row in early_rejects),
        "failed": len(early_failures),
        "failed_by_reason": _counts(row["reason"] for row in early_failures),
        "eligible": counted["eligible"],
    }
    checks = {
        "read = invalid + duplicate + propn + failed + eligible": source["read"]
        == source["invalid"] + source["duplicate"] + source["propn"] + source["failed"]
        + source["eligible"],
        "every early reject is invalid, duplicate or propn": len(early_rejects)
        == source["invalid"] + source["duplicate"] + source["propn"],
    }

    languages = {}
    for lang in counted["languages"]:
        lang_accepted = [row for row in accepted if row["target_lang"] == lang]
        lang_rejected = [row for row in rejected if row["target_lang"] == lang]
        lang_failed = [row for row in failed if row["target_lang"] == lang]
        sampled = counted["sampled"].get(lang, 0)
        scored = [row["similarity"] for row in lang_accepted + lang_rejected if row["similarity"] is not None]
        languages[lang] = {
            "sampled": sampled,
            "not_sampled": source["eligible"] - sampled,
            "accepted": len(lang_accepted),
            "rejected": len(lang_rejected),
            "rejected_by_reason": _counts(row["reason"] for row in lang_rejected),
            "failed": len(lang_failed),
            "failed_by_reason": _counts(row["reason"] for row in lang_failed),
            "similarity_quantiles": _quantiles(scored),
            "accepted_similarity_quantiles": _quantiles(
                [row["similarity"] for row in lang_accepted]
            ),
        }
        checks[f"{lang}: sampled = accepted + rejected + failed"] = sampled == len(
            lang_accepted
        ) + len(lang_rejected) + len(lang_failed)
    stray = {row["target_lang"] for row in accepted + rejected + failed} - set(languages) - {None}
    checks["no rows for unconfigured languages"] = not stray

    return {
        "output": root,
        "input": source,
        "languages": languages,
        "checks": checks,
        "ok": all(checks.values()),
    }


def _table(headers: list[str], rows: Iterable[Iterable]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _reasons(by_reason: dict) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in by_reason.items()) or "-"


def render_html(audit: dict) -> str:
    source = audit["input"]
    funnel = _table(
        ["step", "captions", "why"],
        [
            ["read", source["read"], ""],
            ["invalid", source["invalid"], _reasons(source["invalid_by_reason"])],
            ["duplicate", source["duplicate"], "same normalised text as a kept caption"],
            ["proper nouns", source["propn"], "PROPN share at or over the cut-off"],
            ["failed", source["failed"], _reasons(source["failed_by_reason"])],
            ["eligible", source["eligible"], "left for sampling"],
        ],
    )
    languages = _table(
        ["language", "sampled", "accepted", "rejected", "why rejected", "failed", "why failed",
         "similarity p10 / p50 / p90"],
        [
            [
                lang,
                numbers["sampled"],
                numbers["accepted"],
                numbers["rejected"],
                _reasons(numbers["rejected_by_reason"]),
                numbers["failed"],
                _reasons(numbers["failed_by_reason"]),
                " / ".join(
                    str(numbers["similarity_quantiles"].get(q, "-")) for q in ("p10", "p50", "p90")
                ),
            ]
            for lang, numbers in audit["languages"].items()
        ],
    )
    checks = _table(
        ["check", "holds"], [[name, "yes" if holds else "NO"] for name, holds in audit["checks"].items()]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polycap audit</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }}
th {{ background: #f0f0f0; }}
</style></head><body>
<h1>polycap audit</h1>
<p>Output: <code>{html.escape(audit["output"])}</code></p>
<h2>Captions read and removed before sampling</h2>{funnel}
<h2>Per target language</h2>{languages}
<h2>Conservation checks</h2>{checks}
</body></html>
"""


def write(root: str) -> dict:
    """Compute the audit of ``root`` and write ``audit/audit.json`` and ``audit/audit.html``."""
    audit = compute(root)
    root = root.rstrip("/")
    for path, text in (
        (f"{root}/{AUDIT_JSON}", json.dumps(audit, indent=2, sort_keys=False)),
        (f"{root}/{AUDIT_HTML}", render_html(audit)),
    ):
        with FileSystems.create(path) as stream:
            stream.write(text.encode("utf-8"))
    if not audit["ok"]:
        broken = [name for name, holds in audit["checks"].items() if not holds]
        log.error("audit of %s: broken checks: %s", root, "; ".join(broken))
    return audit
