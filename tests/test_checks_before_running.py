"""What a config promises that only the files can tell, refused before anything runs (and
before anything is paid for): a memory that yields nothing, caption ids that would collide."""

import logging
import shutil

import pytest

from polycap.pipeline import config, graph
from polycap.transforms.errors import ConfigError
from tests.conftest import MULTI30K, ROOT, SAMPLES

DEMO = ROOT / "configs" / "demo.yaml"


def _demo(*overrides: str):
    return config.load(DEMO, overrides)


def test_a_memory_that_covers_no_configured_language_is_refused(tmp_path):
    # The English side copied without its translations: every pair would fail no_translation.
    shutil.copy(MULTI30K / "val.en", tmp_path / "val.en")
    cfg = _demo(f"translation.memory=[{{format: parallel_text, path: {tmp_path}/*.en}}]")
    with pytest.raises(ConfigError, match=r"^translation.memory\[0\].path: no \.de or \.fr file beside"):
        graph.check_before_running(cfg)


def test_a_language_no_memory_covers_is_said_before_running(tmp_path, caplog):
    shutil.copy(MULTI30K / "val.en", tmp_path / "val.en")
    shutil.copy(MULTI30K / "val.de", tmp_path / "val.de")
    cfg = _demo(f"translation.memory=[{{format: parallel_text, path: {tmp_path}/*.en}}]")
    with caplog.at_level(logging.WARNING):
        graph.check_before_running(cfg)
    assert any("fr" in record.message and "no translation memory covers" in record.message
               for record in caplog.records)


def test_two_inputs_with_files_of_the_same_name_are_refused(tmp_path):
    # Sharded exports repeat file names in other folders: gcc:<stem>:<line> would collide.
    tsv = next((SAMPLES / "gcc").glob("*.tsv"))
    for part in ("a", "b"):
        (tmp_path / part).mkdir()
        shutil.copy(tsv, tmp_path / part / "shard-00000.tsv")
    cfg = _demo(
        f"inputs=[{{format: gcc, path: {tmp_path}/a/*.tsv}}, {{format: gcc, path: {tmp_path}/b/*.tsv}}]"
    )
    with pytest.raises(ConfigError, match=r"^inputs\[1\].path: .*shard-00000.tsv gives the same caption ids as .*a/shard-00000.tsv"):
        graph.check_before_running(cfg)


def test_a_file_matched_by_two_inputs_is_refused():
    cfg = _demo(
        f"inputs=[{{format: coco, path: {SAMPLES}/coco/*.json}}, {{format: coco, path: {SAMPLES}/coco/*}}]"
    )
    with pytest.raises(ConfigError, match=r"^inputs\[1\].path: .*captions_val2017.cut.json is also matched by inputs\[0\]"):
        graph.check_before_running(cfg)


def test_only_local_runners_count_as_workers_on_this_machine():
    from apache_beam.options.pipeline_options import PipelineOptions

    from polycap.pipeline import filesystems

    def here(*argv):
        options = PipelineOptions(list(argv))
        filesystems.forward_options_to_worker_processes(options)
        return filesystems.workers_run_here(options)

    assert here("--runner=FnApiRunner")
    assert here("--runner=FnApiRunner", "--direct_running_mode=multi_processing")
    assert here("--runner=DirectRunner")
    assert not here("--runner=DataflowRunner")
    assert not here("--runner=PortableRunner")


def test_model_threads_share_this_machines_cores_among_the_bundles_run_at_once():
    import os

    from apache_beam.options.pipeline_options import PipelineOptions

    cores = len(os.sched_getaffinity(0))

    def threads(*argv):
        return graph.model_threads(PipelineOptions(list(argv)))

    assert threads("--runner=FnApiRunner") == cores  # one bundle at a time
    assert threads("--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                   "--direct_num_workers=2") == max(1, cores // 2)
    assert threads("--runner=FnApiRunner", "--direct_running_mode=multi_threading",
                   f"--direct_num_workers={cores + 1}") == 1
    assert threads("--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                   "--direct_num_workers=0") == 1  # 0: a worker per core
    assert threads("--runner=DataflowRunner") == 1  # a worker process per core already


def test_run_options_make_each_view_once_and_every_view_shares_the_values():
    import copy
    import pickle

    import apache_beam as beam
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, TypeOptions

    from polycap.pipeline.cli import RunOptions

    options = RunOptions(["--runner=FnApiRunner", "--direct_num_workers=3"])
    direct = options.view_as(DirectOptions)
    assert options.view_as(DirectOptions) is direct and direct.direct_num_workers == 3
    options.view_as(TypeOptions).pipeline_type_check = False
    copied = beam.Pipeline(options=options).options  # a deep copy, its views with it
    assert copied.view_as(TypeOptions).pipeline_type_check is False
    copied.view_as(DirectOptions).direct_num_workers = 5
    assert copied.view_as(StandardOptions).runner == "FnApiRunner"
    assert copied.get_all_options()["direct_num_workers"] == 5
    assert options.view_as(DirectOptions).direct_num_workers == 3  # the copy's are its own
    assert pickle.loads(pickle.dumps(copied)).view_as(DirectOptions).direct_num_workers == 5
    shallow = copy.copy(copied)  # shares the views, but not the values once they are replaced
    shallow._all_options = dict(copied._all_options, direct_num_workers=7)
    assert shallow.view_as(DirectOptions).direct_num_workers == 7
    assert copied.view_as(DirectOptions).direct_num_workers == 5
