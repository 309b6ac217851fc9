"""Output buffers let go when their bundle ends (pipeline/output_streams.py): with Beam's own
``finish`` a step keeps its closed stream, and the bytes of its last hand-over, after the bundle;
with the release it keeps none, and a run whose steps hand over more than Beam's 10 MB at a time
gives the same results either way. Beam is left alone under a version the change was not checked
against, and the release is installed once."""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import bundle_processor
from apache_beam.testing.util import assert_that, equal_to

from polycap.pipeline import output_streams

BEAMS_FINISH = bundle_processor.DataOutputOperation.finish
# 12,000 payloads of 1 KB: a step sends 12 MB, more than the 10 MB Beam hands over at a time.
PAYLOADS = 12_000
PAYLOAD_BYTES = 1_000


def _streams_after_bundles(monkeypatch, finish) -> list:
    """Run a two-stage pipeline with ``finish`` as every sending step's end of bundle; -> the
    stream each step held once its bundle had ended. The results are checked inside the run."""
    held = []

    def observed(operation):
        finish(operation)
        held.append(operation.output_stream)

    monkeypatch.setattr(bundle_processor.DataOutputOperation, "finish", observed)
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        payloads = (
            pipeline
            | beam.Create(range(PAYLOADS))
            | "Payload" >> beam.Map(lambda number: (number % 7, bytes([number % 251]) * PAYLOAD_BYTES))
        )
        sizes = payloads | beam.GroupByKey() | beam.MapTuple(lambda key, values: (key, sum(map(len, values))))
        expected = [(key, PAYLOAD_BYTES * len(range(key, PAYLOADS, 7))) for key in range(7)]
        assert_that(sizes, equal_to(expected))
    return held


def test_a_step_lets_its_stream_go_when_its_bundle_ends_and_every_byte_arrives(monkeypatch):
    kept_by_beam = _streams_after_bundles(monkeypatch, BEAMS_FINISH)
    # Beam keeps each closed stream, and what it last handed over (1.2-2 MB here; up to 10 MB
    # and a buffer of 16 MB at scale).
    assert kept_by_beam and all(stream is not None for stream in kept_by_beam)
    assert max(stream.size() for stream in kept_by_beam) > 1_000_000
    released = _streams_after_bundles(monkeypatch, output_streams._releasing(BEAMS_FINISH))
    assert len(released) == len(kept_by_beam)
    assert all(stream is None for stream in released)


def test_installed_once_and_beam_is_left_alone_under_another_version(monkeypatch):
    monkeypatch.setattr(bundle_processor.DataOutputOperation, "finish", BEAMS_FINISH)
    monkeypatch.setattr(beam, "__version__", "0.0.0")
    assert output_streams.release_after_bundle() is False
    assert bundle_processor.DataOutputOperation.finish is BEAMS_FINISH

    monkeypatch.setattr(beam, "__version__", output_streams.CHECKED_BEAM_VERSION)
    assert output_streams.release_after_bundle() is True
    installed = bundle_processor.DataOutputOperation.finish
    assert installed is not BEAMS_FINISH
    assert output_streams.release_after_bundle() is True
    assert bundle_processor.DataOutputOperation.finish is installed  # not wrapped twice
