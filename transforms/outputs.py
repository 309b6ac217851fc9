"""What every stage hands on: the rows it kept, the rows it rejected or could not process, and
what it counted for ``audit/counts.json``. One type for every stage, so the driver wires each the
same way and nothing a stage decides against can be dropped by forgetting an output."""

from typing import NamedTuple, Optional

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

# Tags of a DoFn's outputs, and the counter name of what a stage kept (the other counters of a
# stage are named by its reasons; namespace: the stage).
KEPT = "kept"
REJECTED = "rejected"
FAILED = "failed"


class StageOutput(NamedTuple):
    """``kept`` goes to the next stage; ``rejected`` (``Rejected`` rows) and ``failed``
    (``Failed`` rows) go to the output, None where a stage cannot reject or fail. ``counts``:
    ``(name, value)`` entries of ``audit/counts.json`` the stage computed (what the audit cannot
    read back from the rows: captions sampled per language, translation look-ups), or None."""

    kept: beam.PCollection
    rejected: Optional[beam.PCollection] = None
    failed: Optional[beam.PCollection] = None
    counts: Optional[beam.PCollection] = None


def in_global_window(out):
    """A DoFn's output (a value or a ``TaggedOutput``) as ``finish_bundle`` must yield it: with
    its window, which only ``process`` gets for free. polycap's stages run in the global window."""
    if isinstance(out, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
    return GlobalWindows.windowed_value(out)


def sum_counts(values):
    """Several values of one count name (quota fill's rounds) as one: numbers added, dicts merged
    key by key the same way; anything else must be equal."""
    values = list(values)
    if all(isinstance(value, dict) for value in values):
        keys = sorted({key for value in values for key in value})
        return {key: sum_counts([value[key] for value in values if key in value]) for key in keys}
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return sum(values)
    if any(value != values[0] for value in values):
        raise ValueError(f"cannot add counts {values!r}")
    return values[0]


# Every transform costs graph construction and, on FnApiRunner, operations in a bundle (about 12
# ms each on the demo, most of it Beam inspecting the transform), so the small steps every run
# has are built from the fewest Beam primitives.


class Constant(beam.PTransform):
    """PBegin -> a PCollection of ``values`` (pickled with the graph): an ``Impulse`` and one
    ``FlatMap``. ``beam.Create`` takes four primitives, eight where it reshuffles, which a few
    values never need."""

    def __init__(self, values, element_type=None):
        super().__init__()
        self._values = list(values)
        self._element_type = element_type

    def expand(self, pbegin):
        values = self._values
        emit = beam.FlatMap(lambda _: values)
        if self._element_type is not None:
            emit = emit.with_output_types(self._element_type)
        return pbegin | "Impulse" >> beam.Impulse() | "Values" >> emit


class _CountInBundleFn(beam.DoFn):
    """Elements in; (name, how many) out once per bundle: an addition per element, where a
    (name, 1) per element cost a combine's work for each (about 19 us an element)."""

    def __init__(self, name: str):
        self._name = name

    def start_bundle(self):
        self._count = 0

    def process(self, _):
        self._count += 1

    def finish_bundle(self):
        if self._count:
            yield in_global_window((self._name, self._count))


class CountEach(beam.PTransform):
    """{name: a PCollection, or a tuple of them counted together} -> PCollection[(name, element
    count)], with 0 for an empty one: one combine for every name (``Count.Globally`` per name
    brings its own default branch). Several PCollections are counted each where it is made, not
    flattened first: on a local runner a flatten is a stage of its own, whose input waits in
    memory whole (at 500,000 captions, every caption read)."""

    def expand(self, named):
        counted = []
        for name, given in named.items():
            several = isinstance(given, tuple)
            for index, pcollection in enumerate(given if several else (given,)):
                label = f"Count[{name}][{index}]" if several else f"Count[{name}]"
                counted.append(pcollection | label >> beam.ParDo(_CountInBundleFn(name)))
        zeros = counted[0].pipeline | "Zeros" >> Constant([(name, 0) for name in named])
        return (*counted, zeros) | "Each" >> beam.Flatten() | "Add" >> beam.CombinePerKey(sum)
