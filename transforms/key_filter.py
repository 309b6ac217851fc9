"""Which rows of the large side of a join can meet a key of the small side, so only those are
shuffled: a Bloom filter of the small side's keys.

The translate stage joins the run's pairs with the whole translation memory and the store, which
can hold many times more texts than a run samples (the benchmark's memory at 500,000 captions:
a million entries for 100,000 pairs). A row whose key is among the filter's keys always passes
(a Bloom filter has no false negatives), so the join's result is the same with or without it;
about 1 % of the other rows pass too and meet no pair, which the join already ignores.

Sized from the keys the config expects: 10 bits and 7 hashes a key (~0.8 % false positives);
more keys than expected only let more rows through. The filter takes 1.25 bytes a key (3.5 MB
for M-CLIP's 2.76 million pairs) where the keys themselves would take ~300 MB on every worker.
It is built by one combine (bitwise or), so it is the same whatever the bundles.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import apache_beam as beam
import numpy as np

BITS_PER_KEY = 10
HASHES = 7
MIN_BITS = 1 << 16


def filter_bits(keys_expected: int) -> int:
    """The filter's size in bits for ``keys_expected`` keys: a multiple of 8."""
    return max(MIN_BITS, -(-keys_expected * BITS_PER_KEY // 8) * 8)


def _hashes(key: str) -> tuple[int, int]:
    """The two hashes of double hashing, from a 128-bit blake2b digest of the key."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big") | 1


def _positions(key: str, bits: int) -> list[int]:
    """The key's ``HASHES`` bit positions."""
    first, second = _hashes(key)
    return [(first + index * second) % bits for index in range(HASHES)]


def may_contain(key_filter: bytes, key: str) -> bool:
    """False when ``key`` is certainly not among the filter's keys: at its first position whose
    bit is not set, which for most keys not in it is the first one (so it computes no more)."""
    bits = len(key_filter) * 8
    first, second = _hashes(key)
    for index in range(HASHES):
        position = (first + index * second) % bits
        if not key_filter[position >> 3] >> (position & 7) & 1:
            return False
    return True


class _BuildFilterFn(beam.CombineFn):
    def __init__(self, bits: int):
        self._bits = bits

    def create_accumulator(self) -> bytearray:
        return bytearray(self._bits // 8)

    def add_input(self, bits: bytearray, key: str) -> bytearray:
        for position in _positions(key, self._bits):
            bits[position >> 3] |= 1 << (position & 7)
        return bits

    def merge_accumulators(self, accumulators: Iterable[bytearray]) -> bytearray:
        merged = np.zeros(self._bits // 8, dtype=np.uint8)
        for bits in accumulators:
            np.bitwise_or(merged, np.frombuffer(bits, dtype=np.uint8), out=merged)
        return bytearray(merged.tobytes())

    def extract_output(self, bits: bytearray) -> bytes:
        return bytes(bits)


def key_filter(keys, keys_expected: int, label: str = "KeyFilter"):
    """PCollection[str] (keys) -> the filter as a singleton side input (bytes) for
    ``may_contain``; with no keys, a filter that lets nothing through."""
    bits = filter_bits(keys_expected)
    built = keys | label >> beam.CombineGlobally(_BuildFilterFn(bits)).without_defaults()
    return beam.pvalue.AsSingleton(built, default_value=bytes(bits // 8))
