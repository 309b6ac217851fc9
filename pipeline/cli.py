"""polycap's command line.

    polycap run --config FILE [--output URI] [--set dotted.key=value ...] [Beam options ...]
    polycap audit OUTPUT

Everything ``run`` does not know goes to Beam's ``PipelineOptions``. Without ``--runner`` the
pipeline runs on Beam's in-process ``FnApiRunner``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import audit, config, graph
from pipeline.errors import ConfigError, PolycapError

log = logging.getLogger("polycap")

DEFAULT_RUNNER = "FnApiRunner"
# Directories a run owns under its output root; cleared first so a rerun leaves no stale shards.
RUN_OUTPUTS = ("accepted", "rejected", "failed", "audit")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polycap", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the pipeline (unknown options go to Beam)")
    run.add_argument("--config", required=True, help="YAML config file")
    run.add_argument("--output", help="output root URI (overrides output.path)")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    audit_command = commands.add_parser("audit", help="(re)compute the audit of an output")
    audit_command.add_argument("output", help="output root URI of a finished run")
    return parser


def _clear_run_outputs(root: str) -> None:
    for name in RUN_OUTPUTS:
        path = f"{root}/{name}"
        if FileSystems.exists(path):
            FileSystems.delete([path])


def run(argv: Sequence[str], pipeline: Optional[beam.Pipeline] = None) -> dict:
    """Run the pipeline described by ``argv`` (``run`` command options) and return its audit.

    ``pipeline`` lets tests hand in a ``TestPipeline``; its options then apply."""
    args, beam_args = _parser().parse_known_args(["run", *argv])
    cfg = config.load(args.config, args.set)
    output = (args.output or cfg.output.path or "").rstrip("/")
    if not output:
        raise ConfigError("output.path: required (in the config or as --output)")

    options = PipelineOptions(beam_args)
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    FileSystems.set_options(options)
    graph.check_before_running(cfg)
    _clear_run_outputs(output)

    started = time.monotonic()
    pipeline = pipeline or beam.Pipeline(options=options)
    graph.build(pipeline, cfg, output)
    log.info("running on %s, writing %s", options.view_as(StandardOptions).runner, output)
    pipeline.run().wait_until_finish()
    log.info("pipeline finished in %.1f s", time.monotonic() - started)
    return audit.write(output)


def _summary(report: dict) -> str:
    source = report["input"]
    lines = [
        f"read {source['read']}: invalid {source['invalid']}, duplicate {source['duplicate']}, "
        f"propn {source['propn']}, failed {source['failed']}, eligible {source['eligible']}"
    ]
    for lang, numbers in report["languages"].items():
        lines.append(
            f"{lang}: sampled {numbers['sampled']} -> accepted {numbers['accepted']}, "
            f"rejected {numbers['rejected']}, failed {numbers['failed']}"
        )
    lines.append(f"report: {report['output']}/{audit.AUDIT_HTML}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    command_args, _ = _parser().parse_known_args(argv)
    try:
        if command_args.command == "run":
            report = run(argv[1:])
        else:
            report = audit.write(command_args.output.rstrip("/"))
    except PolycapError as error:
        print(f"polycap: {error}", file=sys.stderr)
        return 2
    print(_summary(report))
    if not report["ok"]:
        print("polycap: the audit's conservation checks do not hold (see the report)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
