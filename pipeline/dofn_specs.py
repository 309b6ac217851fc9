"""Beam's answer to "which state and timers does this DoFn use?", worked out once per DoFn in the
``polycap`` command's process (``command.py``).

Beam 2.77 asks ``apache_beam.transforms.userstate.get_dofn_specs`` that question about the same
DoFn object again and again: when the ParDo is built, when the graph becomes its runner proto,
and several times over while FnApiRunner sets up each bundle. Each answer inspects the
signature of every method the DoFn has (29 for a ``Map``'s), about 1.2 ms; a demo run asked it
over a thousand times, 1.1-1.5 s of its start-up. The answer depends only on the DoFn's methods,
which do not change once it is made, so it is remembered for as long as that DoFn object lives.
A DoFn unpickled on a worker is a new object and is inspected afresh.

Only the command's process remembers: a library user's process, a test's and every worker's
keep Beam as it is. The remembering is installed only under the Beam version it was checked
against (setup.py pins it); under any other, Beam is left alone.
"""

from __future__ import annotations

import weakref

import apache_beam as beam
from apache_beam.transforms import userstate

CHECKED_BEAM_VERSION = "2.77.0"


def remember_per_dofn() -> bool:
    """Make ``userstate.get_dofn_specs`` inspect each DoFn object once; True if installed (now
    or before), False under a Beam version it was not checked against."""
    if beam.__version__ != CHECKED_BEAM_VERSION:
        return False
    if getattr(userstate.get_dofn_specs, "remembers_per_dofn", False):
        return True
    userstate.get_dofn_specs = _remembering(userstate.get_dofn_specs)
    return True


def _remembering(inspect):
    known: dict[int, tuple] = {}

    def get_dofn_specs(dofn):
        specs = known.get(id(dofn))
        if specs is None:
            specs = inspect(dofn)
            try:
                # The entry goes when the DoFn does, so its id can never name another object's.
                forget = weakref.finalize(dofn, known.pop, id(dofn), None)
            except TypeError:  # an object without weak references is inspected every time
                return specs
            forget.atexit = False
            known[id(dofn)] = specs
        state_specs, timer_specs = specs
        return set(state_specs), set(timer_specs)  # callers get sets of their own, as from Beam

    get_dofn_specs.remembers_per_dofn = True
    get_dofn_specs.__doc__ = inspect.__doc__
    return get_dofn_specs
