"""The audit's peak memory on a large output: ``polycap audit OUTPUT`` over a synthetic output of
``--rows`` rows (default 3 million), measured from outside as one process (``measure.py``).

    .venv/bin/python -m benchmarks.audit_memory --rows 3000000

The output has the layout and schemas of a real run (``transforms/write.py``: accepted shards
per language, rejected and failed shards, ``audit/counts.json`` and ``audit/run.json``), and
counts that agree with its rows, so every check of the audit holds. The rows are generated a
chunk at a time with pyarrow, never as Python objects. Shares of the rows (``SHARES``): most are
early rejects (annotators' stock captions, duplicates, proper-noun captions), as in a large run;
the sampled pairs are spread evenly over ``--languages``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.measure import run
from polycap.transforms.write import ACCEPTED_SCHEMA, COUNTS_FILE, FAILED_SCHEMA, REJECTED_SCHEMA

TARGET_MB = 1024
CHUNK_ROWS = 100_000
# outcome, stage, reason, share of the rows; a None stage is an accepted pair.
SHARES = [
    ("accepted", None, None, 0.40),
    ("rejected", "keep", "low_similarity", 0.05),
    ("failed", "translate", "no_translation", 0.03),
    ("rejected", "read", "precanned", 0.12),
    ("rejected", "deduplicate", "duplicate", 0.25),
    ("rejected", "propn", "propn", 0.15),
]
_SENTENCES = pa.array(
    [
        "a dog runs along the beach with a stick in its mouth",
        "two children play football on a green field",
        "a man in a red jacket rides a bicycle down the street",
        "a plate of pasta with tomato sauce and basil on a wooden table",
        "an old steam train crosses a bridge over a river",
        "a woman reads a book on a bench in the park",
        "people walk through a busy market at night",
        "a cat sleeps on a windowsill in the sun",
    ]
)
_TRANSLATIONS = pa.array(
    [
        "ein Hund rennt mit einem Stock im Maul am Strand entlang",
        "zwei Kinder spielen Fußball auf einer grünen Wiese",
        "ein Mann in einer roten Jacke fährt mit dem Fahrrad die Straße hinunter",
        "ein Teller Nudeln mit Tomatensoße und Basilikum auf einem Holztisch",
        "eine alte Dampflok fährt über eine Brücke über einen Fluss",
        "eine Frau liest ein Buch auf einer Bank im Park",
        "Menschen gehen nachts über einen belebten Markt",
        "eine Katze schläft in der Sonne auf einer Fensterbank",
    ]
)
_DATASETS = pa.array(["coco", "gcc", "vizwiz", "multi30k"])


def _pick(values: pa.Array, rows: int, rng) -> pa.Array:
    return values.take(pa.array(rng.integers(0, len(values), rows)))


def _chunk(first_id: int, rows: int, outcome: str, stage, reason, lang, rng) -> pa.Table:
    """``rows`` output rows of one kind, ids from ``first_id``, as the writer's schema."""
    ids = pc.cast(pa.array(np.arange(first_id, first_id + rows)), pa.string())
    text = pc.binary_join_element_wise(_pick(_SENTENCES, rows, rng), ids, " ")
    sampled = lang is not None

    def nulls(kind):
        return pa.nulls(rows, kind)

    def constant(value):
        return pa.repeat(pa.scalar(value), rows)

    if outcome == "accepted":
        similarity = pa.array(rng.uniform(0.5, 1.0, rows))
    elif stage == "keep":
        similarity = pa.array(rng.uniform(-0.1, 0.5, rows))
    else:
        similarity = nulls(pa.float64())
    if sampled:
        propn_ratio = pa.array(rng.uniform(0.0, 0.75, rows))
    elif stage == "propn":
        propn_ratio = pa.array(rng.uniform(0.8, 1.0, rows))
    else:
        propn_ratio = nulls(pa.float64())
    translated = sampled and outcome != "failed"
    columns = {
        "caption_id": pc.binary_join_element_wise("syn", ids, ":"),
        "dataset": _pick(_DATASETS, rows, rng),
        "image_id": ids,
        "image_url": pc.binary_join_element_wise("https://images.example.org", ids, "/"),
        "source_lang": constant("en"),
        "target_lang": constant(lang) if sampled else nulls(pa.string()),
        "source_text": text,
        "translated_text": (
            pc.binary_join_element_wise(_pick(_TRANSLATIONS, rows, rng), ids, " ")
            if translated else nulls(pa.string())
        ),
        "sent_text": nulls(pa.string()),
        "provider": constant("memory") if translated else nulls(pa.string()),
        "similarity": similarity,
        "margin": nulls(pa.float64()),
        "propn_ratio": propn_ratio,
    }
    schema = ACCEPTED_SCHEMA
    if outcome != "accepted":
        columns.update(stage=constant(stage), reason=constant(reason))
        schema = REJECTED_SCHEMA
    if outcome == "failed":
        columns["error"] = constant(f"no translation into {lang} in the memory")
        schema = FAILED_SCHEMA
    return pa.table(columns, schema=schema)


def write_output(root: Path, rows: int, languages: list[str], shards: int, seed: int = 0) -> dict:
    """A synthetic output of ``rows`` rows under ``root``; its ``counts.json``."""
    rng = np.random.default_rng(seed)
    writers: dict[str, pq.ParquetWriter] = {}

    def writer(folder: str, shard: int, schema: pa.Schema) -> pq.ParquetWriter:
        path = root / folder / f"part-{shard:05d}-of-{shards:05d}.parquet"
        if str(path) not in writers:
            path.parent.mkdir(parents=True, exist_ok=True)
            writers[str(path)] = pq.ParquetWriter(path, schema)
        return writers[str(path)]

    sampled = dict.fromkeys(languages, 0)
    removed: dict = {}
    next_id = 0
    for outcome, stage, reason, share in SHARES:
        total = int(rows * share)
        targets = languages if outcome == "accepted" or stage in ("keep", "translate") else [None]
        for lang in targets:
            count = total // len(targets)
            for number, start in enumerate(range(0, count, CHUNK_ROWS)):
                size = min(CHUNK_ROWS, count - start)
                table = _chunk(next_id, size, outcome, stage, reason, lang, rng)
                next_id += size
                folder = f"accepted/lang={lang}" if outcome == "accepted" else outcome
                writer(folder, number % shards, table.schema).write_table(table)
            if lang is None:
                removed.setdefault(stage, {})[reason] = count
            else:
                sampled[lang] += count
    for lang in languages:  # every configured language has its shards, 0-row files included
        for shard in range(shards):
            writer(f"accepted/lang={lang}", shard, ACCEPTED_SCHEMA)
    for path_writer in writers.values():
        path_writer.close()

    eligible = max(sampled.values())
    early = sum(count for reasons in removed.values() for count in reasons.values())
    counts = {
        "read": early + eligible,
        "eligible": eligible,
        "untagged": 0,
        "languages": languages,
        "sampled": sampled,
        "provider": "none",
        "price_per_million_chars": 0.0,
        "run_id": "synthetic",
        "translation": {lang: {"memory": sampled[lang], "store": 0, "miss": 0,
                               "miss_characters": 0} for lang in languages},
    }
    run_facts = {
        "runner": "synthetic output (benchmarks.audit_memory)",
        "config": {"keep": {"min_similarity": 0.5}, "propn": {"max_propn_ratio": 0.8}},
        "metrics": {"counters": removed},
    }
    (root / "audit").mkdir(parents=True, exist_ok=True)
    (root / COUNTS_FILE).write_text(json.dumps(counts, indent=2))
    (root / "audit" / "run.json").write_text(json.dumps(run_facts, indent=2))
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="output rows in all")
    parser.add_argument("--languages", default="de,fr,es,it", help="comma-separated")
    parser.add_argument("--shards", type=int, default=4, help="files per folder")
    parser.add_argument("--keep", type=Path, help="write the output here and keep it")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="polycap-audit-memory-"))
    try:
        started = time.perf_counter()
        write_output(root, args.rows, args.languages.split(","), args.shards)
        size_mb = sum(f.stat().st_size for f in root.rglob("*.parquet")) / 2**20
        print(f"wrote {args.rows:,} rows ({size_mb:.0f} MiB of Parquet) in "
              f"{time.perf_counter() - started:.0f} s under {root}")
        polycap = Path(sys.executable).with_name("polycap")
        measured = run([str(polycap), "audit", str(root)], cwd=Path.cwd(),
                       log_path=root / "audit" / "audit_memory.log")
        log = Path(measured.log).read_text()
        print(
            f"polycap audit: exit {measured.returncode}, {measured.wall_s:.1f} s wall, "
            f"{measured.cpu_s:.1f} s CPU, peak {measured.peak_tree_rss_mb:.0f} MiB "
            f"(largest process {measured.max_rss_mb:.0f} MiB; target <= {TARGET_MB} MiB)"
        )
        if measured.returncode != 0:
            print(log[-3000:])
            return 1
        return 0 if measured.peak_tree_rss_mb <= TARGET_MB else 2
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
