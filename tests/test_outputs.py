"""outputs.CountEach: one count per name, with the PCollections given under one name added up
and a name whose PCollections are all empty counted 0."""

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.outputs import CountEach
from tests.conftest import local_pipeline


def test_count_each_adds_up_the_pcollections_of_a_name():
    with local_pipeline() as pipeline:
        three = pipeline | "Three" >> beam.Create(["a", "b", "c"])
        none = pipeline | "None" >> beam.Create([], reshuffle=False).with_output_types(str)
        two = pipeline | "Two" >> beam.Create([1, 2])
        counts = {"read": (three, none, two), "alone": three, "empty": (none,)} | CountEach()
        assert_that(counts, equal_to([("read", 5), ("alone", 3), ("empty", 0)]))
