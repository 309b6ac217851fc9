"""Beam's DoFn inspection remembered per DoFn object (pipeline/dofn_specs.py): the same answers
as Beam's own, each object inspected once, and a stateful DoFn still runs on FnApiRunner."""

import gc

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate

from polycap.pipeline import dofn_specs
from tests.conftest import ROOT, local_pipeline

BEAMS_OWN = userstate.get_dofn_specs


class _SumPerKey(beam.DoFn):
    """Stateful: a bag per key, emptied by a watermark timer at the end of the window."""

    TOTAL = userstate.BagStateSpec("total", VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", userstate.TimeDomain.WATERMARK)

    def process(self, element, total=beam.DoFn.StateParam(TOTAL), flush=beam.DoFn.TimerParam(FLUSH),
                window=beam.DoFn.WindowParam):
        total.add(element[1])
        flush.set(window.end)

    @userstate.on_timer(FLUSH)
    def emit(self, key=beam.DoFn.KeyParam, total=beam.DoFn.StateParam(TOTAL)):
        yield key, sum(total.read())
        total.clear()


def _counting():
    asked = []

    def inspect(dofn):
        asked.append(type(dofn))  # not the DoFn: holding it would keep its id from being reused
        return BEAMS_OWN(dofn)

    return asked, dofn_specs._remembering(inspect)


def test_the_answers_are_beams_and_each_dofn_is_inspected_once():
    asked, remembered = _counting()
    stateful, plain = _SumPerKey(), beam.Map(len).fn
    for dofn in (stateful, plain, stateful, plain, stateful):
        assert remembered(dofn) == BEAMS_OWN(dofn)
    assert asked == [_SumPerKey, type(plain)]
    # Not two empty answers that agree: the stateful one names its bag and its timer.
    state_specs, timer_specs = remembered(stateful)
    assert [spec.name for spec in state_specs] == ["total"] and len(timer_specs) == 1


def test_each_answer_is_a_set_of_the_callers_own():
    _, remembered = _counting()
    dofn = _SumPerKey()
    remembered(dofn)[0].clear()
    assert len(remembered(dofn)[0]) == 1


def test_a_dofn_is_forgotten_when_it_goes_so_a_new_one_is_inspected():
    # CPython often gives the next object the freed one's id: a stale entry would answer for it.
    asked, remembered = _counting()
    for _ in range(20):
        remembered(_SumPerKey())
        gc.collect()
    assert len(asked) == 20


def test_a_stateful_dofn_runs_as_before_with_the_answers_remembered(monkeypatch):
    monkeypatch.setattr(userstate, "get_dofn_specs", dofn_specs._remembering(BEAMS_OWN))
    with local_pipeline() as pipeline:
        sums = (
            pipeline
            | beam.Create([("a", 1), ("b", 2), ("a", 3), ("b", 4), ("c", 5)])
            | beam.ParDo(_SumPerKey())
        )
        assert_that(sums, equal_to([("a", 4), ("b", 6), ("c", 5)]))


def test_it_is_installed_once_and_only_under_the_beam_version_it_was_checked_against(monkeypatch):
    monkeypatch.setattr(userstate, "get_dofn_specs", BEAMS_OWN)
    monkeypatch.setattr(beam, "__version__", "2.78.0")
    assert dofn_specs.remember_per_dofn() is False
    assert userstate.get_dofn_specs is BEAMS_OWN

    monkeypatch.setattr(beam, "__version__", dofn_specs.CHECKED_BEAM_VERSION)
    assert dofn_specs.remember_per_dofn() is True
    installed = userstate.get_dofn_specs
    assert installed is not BEAMS_OWN and installed.remembers_per_dofn
    assert dofn_specs.remember_per_dofn() is True
    assert userstate.get_dofn_specs is installed  # not wrapped twice


def test_the_checked_version_is_the_one_setup_pins_and_installed():
    assert f'BEAM_VERSION = "{dofn_specs.CHECKED_BEAM_VERSION}"' in (ROOT / "setup.py").read_text()
    assert beam.__version__ == dofn_specs.CHECKED_BEAM_VERSION
