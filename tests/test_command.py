"""The ``polycap`` command's process (pipeline/command.py): garbage collection held through
start-up, then frozen start-up objects and collection as usual while the pipeline runs; Beam's
DoFn inspection remembered (dofn_specs.py) and its step timer sampling every 10 ms at most
(state_sampler.py), and its bundles' output streams let go when they end and freed memory handed
back before they start (bundle_memory.py), there and nowhere else."""

import gc
import json
import subprocess
import sys

from polycap.pipeline import command
from tests.conftest import ROOT, SAMPLES

# What the console script does, with an observer of every collection from the call on: the
# number of frozen objects when it started, and its generation; whether Beam's DoFn inspection
# was remembered; the longest sleep of a step timer made in the process; whether output
# streams are let go when their bundle ends; and whether freed memory is handed back before one.
OBSERVED = """
import atexit, gc, json, sys
from polycap.pipeline import command
seen = []
gc.callbacks.append(lambda phase, info: phase == "start" and seen.append((gc.get_freeze_count(), info["generation"])))
atexit.register(lambda: print("COLLECTIONS " + json.dumps(seen), file=sys.stderr))
def remembered():
    from apache_beam.transforms import userstate
    return getattr(userstate.get_dofn_specs, "remembers_per_dofn", False)
atexit.register(lambda: print(f"REMEMBERED {remembered()}", file=sys.stderr))
def sampling_period():
    from apache_beam.runners.worker import statesampler
    return statesampler.StateSampler("stage", None).sampling_period_ms
atexit.register(lambda: print(f"SAMPLES EVERY {sampling_period()} ms", file=sys.stderr))
def releases_streams():
    from apache_beam.runners.worker import bundle_processor
    return getattr(bundle_processor.DataOutputOperation.finish, "installed_by_polycap", False)
atexit.register(lambda: print(f"RELEASES STREAMS {releases_streams()}", file=sys.stderr))
def hands_back():
    from apache_beam.runners.worker import bundle_processor
    return getattr(bundle_processor.BundleProcessor.process_bundle, "installed_by_polycap", False)
atexit.register(lambda: print(f"HANDS BACK {hands_back()}", file=sys.stderr))
sys.argv = ["polycap", *sys.argv[1:]]
command.console()
"""


def test_the_command_collects_nothing_before_its_graph_is_built_then_collects_as_usual(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", OBSERVED, "run", "--quiet", "--config", str(ROOT / "configs" / "demo.yaml"),
         "--output", str(tmp_path),
         "--set", f"inputs=[{{format: multi30k, path: {SAMPLES}/parallel/multi30k/val.en}}]",
         "--set", "sample.per_language=30", "--set", "sample.fill=false"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "de: sampled 30 -> accepted" in done.stdout
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("COLLECTIONS ")]
    collections = json.loads(line.removeprefix("COLLECTIONS "))
    # The run made garbage and it was collected ...
    assert len(collections) > 10
    # ... and every pass came after start-up's objects (Beam's modules and more) were frozen.
    assert min(frozen for frozen, _ in collections) > 100_000
    assert "REMEMBERED True" in done.stderr
    assert "SAMPLES EVERY 10 ms" in done.stderr
    assert "RELEASES STREAMS True" in done.stderr
    assert "HANDS BACK True" in done.stderr


def test_only_the_command_remembers_beams_dofn_inspection_samples_often_and_lets_streams_go():
    from apache_beam.runners.worker import bundle_processor, statesampler
    from apache_beam.transforms import userstate

    assert not getattr(userstate.get_dofn_specs, "remembers_per_dofn", False)
    assert statesampler.StateSampler("stage", None).sampling_period_ms == statesampler.DEFAULT_SAMPLING_PERIOD_MS
    assert not getattr(bundle_processor.DataOutputOperation.finish, "installed_by_polycap", False)
    assert not getattr(bundle_processor.BundleProcessor.process_bundle, "installed_by_polycap", False)


def test_a_process_that_is_not_the_command_holds_nothing():
    frozen = gc.get_freeze_count()
    command.release_collection()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
