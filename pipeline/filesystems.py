"""The driver's side of Beam's filesystems: the options reach every local worker process, and an
object store that cannot be reached stops the run before it starts.

With ``--direct_running_mode=multi_processing`` Beam's ``FnApiRunner`` starts each SDK worker as
a fresh Python process and hands it the pipeline options of its *provision info*; the runner
makes that empty when it is created by name (``--runner FnApiRunner``), so the workers start with
no options: no ``--s3_endpoint_url``, no keys, no GCS project. They then list ``s3://`` against
the public AWS endpoint and retry with back-off for many minutes.
``forward_options_to_worker_processes`` runs such a pipeline on ``FnApiRunnerWithWorkerOptions``
instead, which gives the runner the options the way Beam's own local job service does. Dataflow and the portable runners pass the
options to their workers themselves and are left alone.

``check_stores_reachable`` asks the S3 endpoint once, with short timeouts and no retries, before
anything lists a path: Beam's own S3 client would retry an endpoint that does not answer for
minutes.
"""

from __future__ import annotations

import urllib.parse
from typing import Iterator, Optional

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    S3Options,
    StandardOptions,
)
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.runner import PipelineRunner

from polycap.transforms.errors import ConfigError

# How long the probe waits to connect, then for an answer; it does not retry.
PROBE_TIMEOUT_S = 5
# Runner names that mean Beam's FnApiRunner (``--runner`` takes either).
_FN_API_RUNNER_NAMES = {
    "fnapirunner",
    "apache_beam.runners.portability.fn_api_runner.fnapirunner",
    "apache_beam.runners.portability.fn_api_runner.fn_runner.fnapirunner",
}
# Beam's SDK worker logs every option it starts with, credentials included, at INFO; the local
# runner relays worker logs to the driver's. Its module runs as ``python -m``, so as ``__main__``.
_WORKER_START_LOGGERS = ("__main__", "apache_beam.runners.worker.sdk_worker_main")


class FnApiRunnerWithWorkerOptions(PipelineRunner):
    """Beam's ``FnApiRunner``, given the pipeline's options as the provision info of its workers.

    Its ``provision_info`` argument is how Beam's local job service (the in-process job server of
    the portable runner) hands a job's options to ``FnApiRunner``; each worker process it starts
    then reads them from ``PIPELINE_OPTIONS``, like a worker of any other runner. This is chosen
    over setting that variable or an options file for the workers ourselves: the runner already
    owns the workers' environment and overwrites ``PIPELINE_OPTIONS``, and an options file would
    put the credentials on disk. Like Beam's ``DirectRunner``, it delegates to a new
    ``FnApiRunner`` per run."""

    def run_pipeline(self, pipeline, options: PipelineOptions):
        return fn_runner.FnApiRunner(provision_info=worker_provision_info(options)).run_pipeline(
            pipeline, options
        )


def worker_provision_info(options: PipelineOptions) -> fn_runner.ExtendedProvisionInfo:
    """The provision info that starts each SDK worker with ``options`` (every filesystem's:
    ``--s3_*``, ``--project`` and GCS's, ...), its start-up log of them silenced."""
    given = options.get_all_options(drop_default=True, retain_unknown_options=True)
    overrides = dict(given.get("sdk_harness_log_level_overrides") or {})
    overrides.update({name: "WARNING" for name in _WORKER_START_LOGGERS})
    given["sdk_harness_log_level_overrides"] = overrides
    return fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(
            # FnApiRunner's own default token, so only the options differ from its default.
            retrieval_token="unused-retrieval-token",
            # Encoded as the portable runner sends a job's options to its job service.
            pipeline_options=JobServiceHandle.encode_pipeline_options(given),
        )
    )


def workers_run_here(options: PipelineOptions) -> bool:
    """Whether ``options`` run the workers on this machine (Beam's local runners)."""
    runner = options.view_as(StandardOptions).runner
    local = {*_FN_API_RUNNER_NAMES, "directrunner",
             f"{__name__}.{FnApiRunnerWithWorkerOptions.__name__}".lower()}
    return isinstance(runner, str) and runner.lower() in local


def forward_options_to_worker_processes(options: PipelineOptions) -> None:
    """Run on ``FnApiRunnerWithWorkerOptions`` where ``options`` would start ``FnApiRunner``'s
    worker processes (``--direct_running_mode=multi_processing``); otherwise change nothing: its
    in-process modes share the driver's filesystem options, other runners pass them on."""
    standard = options.view_as(StandardOptions)
    if (
        isinstance(standard.runner, str)
        and standard.runner.lower() in _FN_API_RUNNER_NAMES
        and options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    ):
        standard.runner = f"{__name__}.{FnApiRunnerWithWorkerOptions.__name__}"


def _stored_paths(cfg, output: Optional[str]) -> Iterator[tuple[str, str]]:
    """(config key, path) of every path of a run of ``cfg`` writing to ``output``."""
    for index, source in enumerate(cfg.inputs):
        yield f"inputs[{index}].path", source.path
    for index, memory in enumerate(cfg.translation.memory):
        yield f"translation.memory[{index}].path", memory.path
    if cfg.translation.store:
        yield "translation.store", cfg.translation.store
    output = output or cfg.output.path
    if output:
        yield "output.path", output


def _without_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part, fit for an error message."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()


def check_stores_reachable(cfg, options: PipelineOptions, output: Optional[str] = None) -> None:
    """Raise ``ConfigError`` naming the key, the path and the endpoint when the S3 store that a
    path of the run names (inputs, memory, store, output) gives no answer within
    ``PROBE_TIMEOUT_S`` to connect and as much to answer; nothing for local paths.

    Any answer counts, an error status too: the probe is unsigned, so it needs no credentials
    and no error of it can hold one."""
    s3_paths = [(key, path) for key, path in _stored_paths(cfg, output) if path.startswith("s3://")]
    if not s3_paths:
        return
    import boto3
    import botocore.config
    import botocore.exceptions
    from botocore import UNSIGNED

    key, path = s3_paths[0]
    s3 = options.view_as(S3Options)
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s3.s3_endpoint_url,
        region_name=s3.s3_region_name,
        use_ssl=not s3.s3_disable_ssl,
        verify=s3.s3_verify,
        config=botocore.config.Config(
            signature_version=UNSIGNED,
            connect_timeout=PROBE_TIMEOUT_S,
            read_timeout=PROBE_TIMEOUT_S,
            retries={"total_max_attempts": 1},
        ),
    )
    endpoint = _without_userinfo(client.meta.endpoint_url)
    bucket = path.removeprefix("s3://").split("/", 1)[0]
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        return  # an answer: the store is there (whether the bucket is, the run will say)
    except botocore.exceptions.ReadTimeoutError:
        reason = f"no answer within {PROBE_TIMEOUT_S} s"
    except botocore.exceptions.ConnectTimeoutError:
        reason = f"no connection within {PROBE_TIMEOUT_S} s"
    except botocore.exceptions.SSLError:
        reason = "the TLS handshake failed (see --s3_verify)"
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError):
        reason = "the connection failed"
    else:
        return
    raise ConfigError(
        f"{key}: cannot reach the S3 endpoint {endpoint} for {path!r}: {reason} "
        "(check --s3_endpoint_url and the network)"
    )
