"""The Bloom filter of join keys (key_filter.py): no key of its own is ever left out, few others
pass, and it is the same however the keys were bundled."""

import random

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.key_filter import _BuildFilterFn, _positions, filter_bits, key_filter, may_contain
from polycap.transforms.store import lookup_key
from tests.conftest import local_pipeline


def _keys(n, prefix="A dog on a beach"):
    return [lookup_key("en", "de", f"{prefix} number {index}.") for index in range(n)]


def _built(keys, bits):
    build = _BuildFilterFn(bits)
    return build.extract_output(
        build.merge_accumulators([build.add_input(build.create_accumulator(), key) for key in keys])
    )


def test_every_key_passes_and_about_one_percent_of_the_others():
    keys, others = _keys(20_000), _keys(20_000, prefix="A cat in a tree")
    built = _built(keys, filter_bits(len(keys)))
    assert all(may_contain(built, key) for key in keys)
    passed = sum(may_contain(built, key) for key in others)
    assert passed < 0.02 * len(others)  # 10 bits and 7 hashes a key: ~0.8 %


def test_more_keys_than_expected_only_let_more_others_through():
    keys, others = _keys(50_000), _keys(5_000, prefix="A cat in a tree")
    built = _built(keys, filter_bits(1_000))
    assert all(may_contain(built, key) for key in keys)
    assert sum(may_contain(built, key) for key in others) > 0.02 * len(others)


def test_the_filter_does_not_depend_on_how_the_keys_were_bundled():
    keys = _keys(3_000)
    bits = filter_bits(len(keys))
    build = _BuildFilterFn(bits)
    in_three = [build.create_accumulator() for _ in range(3)]
    for index, key in enumerate(reversed(keys)):
        build.add_input(in_three[index % 3], key)
    assert build.extract_output(build.merge_accumulators(in_three)) == _built(keys, bits)


def test_rows_pass_by_the_filter_of_the_keys_of_a_pipeline():
    keys = _keys(100)
    pipeline = local_pipeline()
    pair_keys = key_filter(pipeline | "Keys" >> beam.Create(keys), keys_expected=100)
    nothing = key_filter(pipeline | "NoKeys" >> beam.Create([]).with_output_types(str), 100, "NoFilter")
    rows = pipeline | "Rows" >> beam.Create(keys[:10] + _keys(10, prefix="unrelated"))
    assert_that(
        rows | "Pass" >> beam.Filter(lambda key, built: may_contain(built, key), pair_keys)
        | "CountPassed" >> beam.combiners.Count.Globally(),
        # 100 keys in 65,536 bits: a false positive has odds of about 1e-14
        equal_to([10]),
        label="Passed",
    )
    assert_that(
        rows | "PassNone" >> beam.Filter(lambda key, built: may_contain(built, key), nothing),
        equal_to([]),
        label="AnEmptyFilterPassesNothing",
    )
    pipeline.run().wait_until_finish()


def test_a_key_may_be_contained_exactly_when_all_its_bits_are_set():
    # may_contain stops at the first bit not set; the filter is built from all of _positions.
    chooser = random.Random(7)
    for fill in (0.3, 0.9, 0.99):
        bits = filter_bits(1000)
        key_filter_bytes = bytes(
            sum(1 << bit for bit in range(8) if chooser.random() < fill) for _ in range(bits // 8)
        )
        for key in _keys(2000, prefix=f"fill {fill}"):
            every_bit = all(key_filter_bytes[p >> 3] >> (p & 7) & 1 for p in _positions(key, bits))
            assert may_contain(key_filter_bytes, key) == every_bit
