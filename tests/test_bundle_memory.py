"""What a bundle leaves in memory (pipeline/bundle_memory.py). Output buffers: with Beam's own
``finish`` a step keeps its closed stream, and the bytes of its last hand-over, after the bundle;
with the release it keeps none, and a run whose steps hand over more than Beam's 10 MB at a time
gives the same results either way. Freed memory: every bundle asks for it to be handed back over
the threshold; where the heaps hold that much free in holes, the process's resident size falls by
most of it, and under the threshold nothing is done. Beam is left alone under a version the
changes were not checked against, and each is installed once."""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import bundle_processor
from apache_beam.testing.util import assert_that, equal_to

from polycap.pipeline import bundle_memory
from polycap.transforms import process_memory

BEAMS_FINISH = bundle_processor.DataOutputOperation.finish
# 12,000 payloads of 1 KB: a step sends 12 MB, more than the 10 MB Beam hands over at a time.
PAYLOADS = 12_000
PAYLOAD_BYTES = 1_000


def _run_two_stages() -> None:
    """12 MB through a grouping, its sums checked inside the run."""
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        payloads = (
            pipeline
            | beam.Create(range(PAYLOADS))
            | "Payload" >> beam.Map(lambda number: (number % 7, bytes([number % 251]) * PAYLOAD_BYTES))
        )
        sizes = payloads | beam.GroupByKey() | beam.MapTuple(lambda key, values: (key, sum(map(len, values))))
        expected = [(key, PAYLOAD_BYTES * len(range(key, PAYLOADS, 7))) for key in range(7)]
        assert_that(sizes, equal_to(expected))


def _streams_after_bundles(monkeypatch, finish) -> list:
    """Run the two stages with ``finish`` as every sending step's end of bundle; -> the stream
    each step held once its bundle had ended."""
    held = []

    def observed(operation):
        finish(operation)
        held.append(operation.output_stream)

    monkeypatch.setattr(bundle_processor.DataOutputOperation, "finish", observed)
    _run_two_stages()
    return held


def test_a_step_lets_its_stream_go_when_its_bundle_ends_and_every_byte_arrives(monkeypatch):
    kept_by_beam = _streams_after_bundles(monkeypatch, BEAMS_FINISH)
    # Beam keeps each closed stream, and what it last handed over (1.2-2 MB here; up to 10 MB
    # and a buffer of 16 MB at scale).
    assert kept_by_beam and all(stream is not None for stream in kept_by_beam)
    assert max(stream.size() for stream in kept_by_beam) > 1_000_000
    released = _streams_after_bundles(monkeypatch, bundle_memory._releasing(BEAMS_FINISH))
    assert len(released) == len(kept_by_beam)
    assert all(stream is None for stream in released)


BEAMS_PROCESS_BUNDLE = bundle_processor.BundleProcessor.process_bundle


def test_every_bundle_asks_for_the_freed_memory_over_the_threshold_to_be_handed_back(monkeypatch):
    asked = []
    monkeypatch.setattr(process_memory, "return_freed_memory_over", asked.append)
    monkeypatch.setattr(bundle_processor.BundleProcessor, "process_bundle",
                        bundle_memory._handing_back(BEAMS_PROCESS_BUNDLE))
    bundles = []
    counting = bundle_processor.BundleProcessor.process_bundle

    def counted(processor, *args, **kwargs):
        bundles.append(1)
        return counting(processor, *args, **kwargs)

    monkeypatch.setattr(bundle_processor.BundleProcessor, "process_bundle", counted)
    _run_two_stages()
    assert len(bundles) >= 2
    assert asked == [bundle_memory.FREE_WORTH_RETURNING] * len(bundles)


def _resident_mb() -> float:
    with open("/proc/self/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("Rss:")) / 1024


def test_the_hand_back_returns_free_holes_over_the_threshold_and_nothing_under_it():
    # 5,000 blocks of 32 KB (from the C heap: over Python's arenas' 512 bytes, under glibc's
    # 128 KB for mapping a block apart), every other one freed: 80 MB of free holes of eight
    # pages each (all but the first whole ones can go), which glibc keeps resident until asked.
    blocks = [bytes([index % 256]) * 32768 for index in range(5_000)]
    kept = blocks[1::2]
    del blocks
    free_mb = process_memory.free_heap_bytes() / 2**20
    assert free_mb > 75, free_mb
    before = _resident_mb()
    assert process_memory.return_freed_memory_over(int(free_mb * 2) << 20) is False
    untouched = _resident_mb()
    assert process_memory.return_freed_memory_over(bundle_memory.FREE_WORTH_RETURNING) is True
    after = _resident_mb()
    assert abs(untouched - before) < 10, (before, untouched)
    assert before - after > 0.6 * 80, (before, after, free_mb)
    assert len(kept) == 2_500


@pytest.mark.parametrize("install, beams_class, method_name, beams_own", [
    (bundle_memory.release_after_bundle, bundle_processor.DataOutputOperation, "finish", BEAMS_FINISH),
    (bundle_memory.hand_back_before_bundle, bundle_processor.BundleProcessor, "process_bundle", BEAMS_PROCESS_BUNDLE),
])
def test_installed_once_and_beam_is_left_alone_under_another_version(
    monkeypatch, install, beams_class, method_name, beams_own
):
    monkeypatch.setattr(beams_class, method_name, beams_own)
    monkeypatch.setattr(beam, "__version__", "0.0.0")
    assert install() is False
    assert getattr(beams_class, method_name) is beams_own

    monkeypatch.setattr(beam, "__version__", bundle_memory.CHECKED_BEAM_VERSION)
    assert install() is True
    installed = getattr(beams_class, method_name)
    assert installed is not beams_own
    assert install() is True
    assert getattr(beams_class, method_name) is installed  # not wrapped twice
