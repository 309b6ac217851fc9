"""polycap's command line.

    polycap run --config FILE [--output URI] [--set dotted.key=value ...] [Beam options ...]
    polycap audit OUTPUT
    polycap audit REPORT_DIR --pairs FILE_OR_GLOB --lang de [--source-col C --target-col C]
                  [--scorer BACKEND[/MODEL]] [--min-similarity X]
    polycap calibrate --references PARALLEL --lang de [--lang fr] [--scorer BACKEND[/MODEL]]
                      [--precision P] [--output DIR]

Everything ``run`` does not know goes to Beam's ``PipelineOptions``. Without ``--runner`` the
pipeline runs on Beam's in-process ``FnApiRunner``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
import uuid
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from polycap.pipeline import config, filesystems, graph
from polycap.pipeline.command import release_collection
from polycap.report import audit, calibrate, pairs_audit, runfacts
from polycap.transforms import process_memory, progress
from polycap.transforms.errors import ConfigError, PolycapError
from polycap.transforms.read import UnreadableFiles
from polycap.transforms.write import DRY_RUN_FILE, clear_run_outputs

log = logging.getLogger("polycap")

DEFAULT_RUNNER = "FnApiRunner"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polycap", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the pipeline (unknown options go to Beam)")
    run.add_argument("--config", required=True, help="YAML config file")
    run.add_argument("--output", help="output root URI (overrides output.path)")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    run.add_argument(
        "--quiet", action="store_true",
        help="no progress lines (a local run prints one every few seconds)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="run up to translation and report what the run would translate and pay; "
        "no provider is called, no output is written but OUTPUT/dry_run/",
    )
    audit_command = commands.add_parser(
        "audit", help="(re)compute the audit of an output, or audit a parallel set (--pairs)"
    )
    audit_command.add_argument(
        "output", help="output root URI of a finished run; with --pairs, where audit/ is written"
    )
    scored = audit_command.add_argument_group(
        "auditing a parallel set that polycap did not produce"
    )
    scored.add_argument(
        "--pairs",
        metavar="FILE_OR_GLOB",
        help="aligned text files X.<source-lang> (beside X.<lang>), or Parquet/CSV/JSONL",
    )
    scored.add_argument("--source-col", help="column of the source captions (tables)")
    scored.add_argument("--target-col", help="column of the translations (tables)")
    scored.add_argument(
        "--dataset-col", help="column naming each row's dataset (default: the file name)"
    )
    scored.add_argument("--lang", help="language of the translations")
    scored.add_argument(
        "--min-similarity", type=float, help="threshold to count accepted / rejected"
    )
    _scorer_options(scored)

    calibrate_command = commands.add_parser(
        "calibrate", help="pick keep.min_similarity from human reference translations"
    )
    calibrate_command.add_argument(
        "--references",
        required=True,
        metavar="PARALLEL",
        help="aligned text files X.<source-lang> (beside X.<lang>), or Parquet/CSV/JSONL",
    )
    calibrate_command.add_argument("--lang", action="append", required=True, help="repeatable")
    calibrate_command.add_argument("--source-col", help="column of the source captions (tables)")
    calibrate_command.add_argument("--target-col", help="column of the translations (tables)")
    calibrate_command.add_argument(
        "--precision",
        type=float,
        help="lowest threshold reaching this precision (default: equal error)",
    )
    calibrate_command.add_argument(
        "--seed", type=int, default=0, help="seed of the mismatched pairs"
    )
    calibrate_command.add_argument(
        "--output", default="calibration", help="directory for the results"
    )
    calibrate_command.add_argument(
        "--margin-reference-pairs", type=int,
        help="the run's score.margin_reference_pairs, for the ratio margin (default: its default)",
    )
    _scorer_options(calibrate_command)
    return parser


def _scorer_options(group) -> None:
    group.add_argument("--source-lang", default="en", help="language of the source captions")
    group.add_argument(
        "--scorer", help="use-multilingual (default) or sentence-transformers/<model or local path>"
    )
    group.add_argument(
        "--allow-uncovered",
        action="store_true",
        help="score a language the scorer does not cover anyway (flagged in every output)",
    )


PROGRESS_SECONDS = 5  # how often a local run prints its progress line


class RunOptions(PipelineOptions):
    """A run's Beam options, whose view as each options class is made once. Beam asks for a view
    each time it applies a transform or infers its output type, and every view parses the flags
    again with a new argparse parser: about a thousand parsers for the demo's graph, 0.7 s of its
    1.6 s. A view holds no value of its own (every view of one object reads and writes the one
    dictionary of values they share), so the first serves every later ask."""

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})  # not through PipelineOptions.__setattr__
        view = views.get(cls)
        # A copy's views must read the copy's values. A deep copy (beam.Pipeline takes one)
        # copies both together; a shallow copy would share the views of the original, whose
        # values are other ones, so such a view is made again.
        if view is None or view._all_options is not self._all_options:
            view = views[cls] = super().view_as(cls)
        return view


def _prepare(argv: Sequence[str]):
    """Parse ``run`` options, load and check the config: (args, cfg, output root, Beam options)."""
    args, beam_args = _parser().parse_known_args(["run", *argv])
    cfg = config.load(args.config, args.set)
    output = (args.output or cfg.output.path or "").rstrip("/")
    if not output:
        raise ConfigError("output.path: required (in the config or as --output)")
    options = RunOptions(beam_args)
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    FileSystems.set_options(options)
    # Before anything lists a path: Beam's S3 client retries a store that does not answer.
    filesystems.check_stores_reachable(cfg, options, output)
    filesystems.forward_options_to_worker_processes(options)
    graph.check_before_running(cfg, workers_here=filesystems.workers_run_here(options))
    if cfg.translation.max_characters is not None:  # for the progress line's "billed N of CAP"
        os.environ[progress.CAP_ENV] = str(cfg.translation.max_characters)
    # Workers may start in another directory (portable runners, Dataflow): no relative paths.
    return args, config.with_absolute_paths(cfg), config.absolute_path(output), options


def run(argv: Sequence[str], pipeline: Optional[beam.Pipeline] = None) -> dict:
    """Run the pipeline described by ``argv`` (``run`` command options) and return its audit.

    ``pipeline`` lets tests hand in a ``TestPipeline``; its options then apply."""
    args, cfg, output, options = _prepare(argv)
    if args.dry_run:
        raise ConfigError("--dry-run: use pipeline.cli.dry_run()")
    deleted = clear_run_outputs(output)
    if deleted:
        log.info("deleted %d files of an earlier run under %s", deleted, output)

    started, clock = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    pipeline = pipeline or beam.Pipeline(options=options)
    graph.build(pipeline, cfg, output, run_id=uuid.uuid4().hex)
    log.info("running on %s, writing %s", options.view_as(StandardOptions).runner, output)
    release_collection()
    result = pipeline.run()
    result.wait_until_finish()
    wall_seconds = time.monotonic() - clock
    log.info("pipeline finished in %.1f s", wall_seconds)
    runfacts.write(output, runfacts.collect(cfg, options, started, wall_seconds, result))
    process_memory.return_freed_memory()  # what the run freed, before the audit allocates anew
    return audit.write(output)


def dry_run(argv: Sequence[str]) -> dict:
    """``polycap run --dry-run``: per language, its provider, the distinct texts to translate,
    where they are found (memory, store) and the characters and cost its provider would bill (a
    local model bills none)."""
    args, cfg, output, options = _prepare(argv)
    pipeline = beam.Pipeline(options=options)
    graph.build(pipeline, cfg, output, run_id="dry-run", dry_run=True)
    release_collection()
    pipeline.run().wait_until_finish()
    with FileSystems.open(f"{output}/{DRY_RUN_FILE}") as stream:
        counted = json.loads(stream.read().decode("utf-8"))
    languages = {}
    for lang in cfg.languages:
        found = counted["translation"].get(lang, {"memory": 0, "store": 0, "miss": 0, "miss_characters": 0})
        provider = cfg.translation.provider_for(lang)
        languages[lang] = {
            "provider": provider.value,
            "sampled": counted["sampled"].get(lang, 0),
            "distinct_texts": found["memory"] + found["store"] + found["miss"],
            "memory_hits": found["memory"],
            "store_hits": found["store"],
            "to_translate": found["miss"],
            "miss_characters": found["miss_characters"],
            "characters_to_bill": found["miss_characters"] if provider.bills else 0,
        }
        if provider.bills and "budget" in counted:  # translation.max_characters: what the cap funds
            planned = counted["budget"].get(lang, {})
            languages[lang].update(
                to_translate=planned.get("funded_texts", 0),
                characters_to_bill=planned.get("funded_characters", 0),
                over_budget_pairs=planned.get("over_budget_texts", 0),
                over_budget_characters=planned.get("over_budget_characters", 0),
            )
        price = counted["providers"][lang]["price_per_million_chars"]
        languages[lang]["estimated_cost"] = round(languages[lang]["characters_to_bill"] * price / 1e6, 4)
    return {"max_characters": counted.get("max_characters"), "languages": languages}


def _estimate_summary(estimate: dict) -> str:
    lines = ["dry run: per language its provider, the texts to translate and what they bill"]
    if estimate["max_characters"] is not None:
        lines[0] += f"; cap {estimate['max_characters']:,} characters"
    for lang, numbers in estimate["languages"].items():
        over = numbers.get("over_budget_pairs")
        lines.append(
            f"{lang} ({numbers['provider']}): {numbers['distinct_texts']} distinct texts, memory "
            f"{numbers['memory_hits']}, store {numbers['store_hits']}, to translate "
            f"{numbers['to_translate']} ({numbers['characters_to_bill']} characters billed, "
            f"~{numbers['estimated_cost']:.2f})"
            + (f", left out by the cap {over} ({numbers['over_budget_characters']} characters)" if over else "")
        )
    return "\n".join(lines)


def _audit(args) -> dict:
    """``polycap audit``: of a finished output, or (``--pairs``) of a parallel set."""
    output = args.output.rstrip("/")
    if not args.pairs:
        pairs_only = ("source_col", "target_col", "dataset_col", "lang", "min_similarity", "scorer")
        given = [name for name in pairs_only if getattr(args, name) is not None]
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')}: only with --pairs")
        return audit.write(output)
    if not args.lang:
        raise ConfigError("--lang: required with --pairs")
    if args.min_similarity is not None and not -1.0 <= args.min_similarity <= 1.0:
        raise ConfigError(f"--min-similarity {args.min_similarity}: expected a number in [-1, 1]")
    return pairs_audit.audit_pairs(
        output,
        args.pairs,
        args.lang,
        source_lang=args.source_lang,
        source_col=args.source_col,
        target_col=args.target_col,
        dataset_col=args.dataset_col,
        scorer=args.scorer,
        min_similarity=args.min_similarity,
        allow_uncovered=args.allow_uncovered,
    )


def _calibrate(args) -> str:
    result = calibrate.calibrate(
        args.references,
        args.lang,
        source_lang=args.source_lang,
        scorer=args.scorer,
        precision=args.precision,
        seed=args.seed,
        source_col=args.source_col,
        target_col=args.target_col,
        allow_uncovered=args.allow_uncovered,
        margin_reference_pairs=args.margin_reference_pairs,
    )
    return calibrate.summary(result, calibrate.write(args.output, result))


def _summary(report: dict) -> str:
    source = report["input"]
    lines = [
        f"read {source['read']}: invalid {source['invalid']}, duplicate {source['duplicate']}, "
        f"propn {source['propn']}, failed {source['failed']}, eligible {source['eligible']}"
        + (f" ({source['untagged']} never POS-tagged)" if source["untagged"] else "")
    ]
    for lang, numbers in report["languages"].items():
        lines.append(
            f"{lang}: sampled {numbers['sampled']} -> accepted {numbers['accepted']}, "
            f"rejected {numbers['rejected']}, failed {numbers['failed']}"
        )
    lines.append(f"report: {report['output']}/{audit.AUDIT_HTML}")
    return "\n".join(lines)


def _unreadable(report: dict) -> Optional[tuple[str, bool]]:
    """(the line naming the input files read only up to a break, whether the run's config lets
    that pass: ``read.unreadable_files: record``), or None when every file was read whole."""
    files = report["input"].get("unreadable_files", [])
    if not files:
        return None
    noun = "file" if len(files) == 1 else "files"
    line = (
        f"{len(files)} input {noun} could not be read to its end (what came before the break is "
        f"in the dataset, the rest is not): {', '.join(files)}"
    )
    policy = report.get("run", {}).get("config", {}).get("read", {}).get("unreadable_files")
    return line, policy == UnreadableFiles.RECORD.value


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Beam's INFO lines a local run has no use for: one for each of polycap's annotations, which
    # are strings (PEP 563) that Beam reads as Any (a hundred lines a run; the types Beam uses
    # are those the stages declare with with_output_types), BatchElements' statistics of every
    # pair-check step, and the in-process worker's state cache size.
    for quiet in ("typehints.native_type_compatibility", "transforms.util", "runners.worker.statecache"):
        logging.getLogger(f"apache_beam.{quiet}").setLevel(logging.WARNING)
    argv = list(sys.argv[1:] if argv is None else argv)
    command_args, beam_args = _parser().parse_known_args(argv)
    try:
        if command_args.command == "run" and command_args.dry_run:
            print(_estimate_summary(dry_run(argv[1:])))
            return 0
        if command_args.command == "run":
            if not command_args.quiet:
                os.environ.setdefault(progress.PROGRESS_SECONDS_ENV, str(PROGRESS_SECONDS))
            report = run(argv[1:])
        else:
            release_collection()
            # audit and calibrate take Beam's filesystem options too (--s3_endpoint_url, ...).
            FileSystems.set_options(PipelineOptions(beam_args))
            if command_args.command == "calibrate":
                print(_calibrate(command_args))
                return 0
            report = _audit(command_args)
    except PolycapError as error:
        print(f"polycap: {error}", file=sys.stderr)
        return 2
    print(_summary(report))
    code = 0
    if not report["ok"]:
        print("polycap: the audit's conservation checks do not hold (see the report)", file=sys.stderr)
        code = 1
    unreadable = _unreadable(report)
    if unreadable is not None:
        line, accepted = unreadable
        if accepted:
            print(f"{line} (read.unreadable_files: record)")
        else:
            print(f"polycap: {line} (read.unreadable_files: record accepts this)", file=sys.stderr)
            code = 1
    return code
