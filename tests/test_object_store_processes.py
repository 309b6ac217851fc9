"""Object stores with several local worker processes, and a store that cannot be reached.

With ``--direct_running_mode=multi_processing`` Beam's ``FnApiRunner`` starts its SDK workers as
fresh Python processes; they must see the same filesystem options as the driver (an S3
endpoint, its keys, a GCS project), or they list ``s3://`` against the public AWS endpoint and
retry for many minutes. A store that cannot be reached must stop the run at once, naming its
endpoint, never a credential. Every run here has a bounded timeout, so a hang fails the test.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.options.value_provider import RuntimeValueProvider
from apache_beam.testing.util import assert_that, equal_to

from polycap.pipeline import config, filesystems
from polycap.transforms.errors import ConfigError
from tests.conftest import ROOT
from tests.test_scale import (  # noqa: F401  (s3_endpoint is a fixture)
    BUCKET,
    DEMO,
    S3_KEY,
    S3_SECRET,
    _free_port,
    _s3_client,
    _s3_options,
    _sets,
    s3_endpoint,
    upload_samples,
)

PER_LANGUAGE = 20
TWO_PROCESSES = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
# A healthy two-process run takes 40-100 s on two busy cores; the hang it guards against, many
# minutes of back-off.
RUN_TIMEOUT_S = 180
# What "fails fast" means for a store that cannot be reached: the CLI's start-up included.
UNREACHABLE_TIMEOUT_S = 60


def _polycap(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """``polycap`` as a user runs it; a run past ``timeout`` fails the test instead of hanging,
    and its worker processes end with it (they are in its process group)."""
    command = [sys.executable, "-m", "polycap.pipeline.command", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"polycap {args[0]} still running after {timeout} s; stderr ends:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _keys(client, prefix: str) -> list[str]:
    return [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for item in page.get("Contents", [])
    ]


@pytest.fixture(scope="module")
def s3_inputs(s3_endpoint):
    """The demo's inputs and memory uploaded to the moto server: their ``--set`` arguments. Of
    Multi30k, one split only (inputs and memory): it keeps the runs short."""
    remote = upload_samples(_s3_client(s3_endpoint))
    one_split = f"s3://{BUCKET}/inputs/parallel/multi30k/test_2016_flickr.en"
    remote.update({key: one_split for key, path in remote.items() if path.endswith("/multi30k/*.en")})
    assert list(remote.values()).count(one_split) == 2  # the demo's Multi30k input and memory
    return _sets(remote)


def test_two_worker_processes_read_and_write_s3_with_the_s3_options(s3_endpoint, s3_inputs):
    done = _polycap(
        "run", "--config", str(DEMO), "--output", f"s3://{BUCKET}/processes",
        "--set", f"sample.per_language={PER_LANGUAGE}", "--set", "sample.fill=false", *s3_inputs,
        *_s3_options(s3_endpoint), *TWO_PROCESSES,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "de: sampled 20" in done.stdout and "fr: sampled 20" in done.stdout
    client = _s3_client(s3_endpoint)
    keys = _keys(client, "processes/")
    assert "processes/accepted/lang=de/part-00000-of-00001.parquet" in keys
    audit = json.loads(client.get_object(Bucket=BUCKET, Key="processes/audit/audit.json")["Body"].read())
    assert audit["ok"], audit["checks"]
    # The workers log the options they start with: the keys must not be among them.
    for text in (done.stdout, done.stderr):
        assert S3_SECRET not in text and S3_KEY not in text


def test_an_unreachable_store_fails_the_run_at_once_naming_its_endpoint(s3_inputs):
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    done = _polycap(
        "run", "--config", str(DEMO), "--output", f"s3://{BUCKET}/unreachable", *s3_inputs,
        *_s3_options(endpoint), *TWO_PROCESSES,
        timeout=UNREACHABLE_TIMEOUT_S,
    )
    assert time.monotonic() - started < UNREACHABLE_TIMEOUT_S
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("polycap: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert endpoint in errors[0]
    assert "Traceback" not in done.stderr
    assert S3_SECRET not in done.stderr and S3_KEY not in done.stderr


@pytest.fixture
def silent_endpoint():
    """An endpoint that accepts connections and never answers (a stuck proxy, a dead server)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_store_that_never_answers_is_reported_within_the_probe_timeout(silent_endpoint, monkeypatch):
    monkeypatch.setattr(filesystems, "PROBE_TIMEOUT_S", 1)
    cfg = config.load(DEMO, ["output.path=s3://bucket/out"])
    options = PipelineOptions(_s3_options(silent_endpoint))
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        filesystems.check_stores_reachable(cfg, options)
    assert time.monotonic() - started < 3 * filesystems.PROBE_TIMEOUT_S
    message = str(raised.value)
    assert silent_endpoint in message and "output.path" in message
    assert S3_SECRET not in message and S3_KEY not in message


def test_no_probe_without_an_object_store_path():
    cfg = config.load(DEMO)  # local paths only: nothing to reach
    filesystems.check_stores_reachable(cfg, PipelineOptions(_s3_options("http://127.0.0.1:9")))


def test_worker_processes_start_with_the_gcs_and_s3_options_and_log_no_credential(caplog):
    options = PipelineOptions(
        [
            "--project=polycap-test-project",
            "--s3_endpoint_url=http://127.0.0.1:9",
            f"--s3_access_key_id={S3_KEY}",
            f"--s3_secret_access_key={S3_SECRET}",
            "--runner=FnApiRunner",
            *TWO_PROCESSES,
        ]
    )
    filesystems.forward_options_to_worker_processes(options)
    with caplog.at_level(logging.INFO), beam.Pipeline(options=options) as pipeline:
        # A worker keeps the options it started with for runtime values (Dataflow templates).
        seen = pipeline | beam.Create([0, 1]) | beam.Map(
            lambda _: tuple(
                RuntimeValueProvider.get_value(name, str, None) for name in ("project", "s3_endpoint_url")
            )
        )
        assert_that(seen, equal_to([("polycap-test-project", "http://127.0.0.1:9")] * 2))
    worker_lines = [record.getMessage() for record in caplog.records if "Worker:" in record.getMessage()]
    assert worker_lines  # the workers' logs do reach the driver's
    assert not [line for line in worker_lines if S3_SECRET in line or S3_KEY in line]


def test_in_process_runs_and_other_runners_keep_their_runner():
    for argv in (
        ["--runner=FnApiRunner"],
        ["--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2"],
        ["--runner=PortableRunner", *TWO_PROCESSES],
    ):
        options = PipelineOptions(argv)
        filesystems.forward_options_to_worker_processes(options)
        assert options.view_as(StandardOptions).runner == argv[0].removeprefix("--runner=")
