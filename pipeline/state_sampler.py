"""How long the ``polycap`` command's process lets Beam's step timer sleep: 10 ms at most, not
Beam's 200 ms (``command.py`` installs it).

Beam times the steps of each bundle (the stage seconds in ``audit/run.json``) with a sampler
thread per bundle: it sleeps, then adds the time slept to the step that is running. Its sleep
starts at a hundredth of the period and grows by a fifth each time, up to the period. At the end
of every bundle FnApiRunner stops the sampler and waits for its thread to wake, which takes up
to one whole sleep: 200 ms once a bundle has run a couple of seconds. A demo run has 70 bundles;
their ends waited 0.3-0.5 s in all, about a tenth of its fixed cost. With a 10 ms period they
wait about 0.15 s. The thread samples without holding Python's lock, so waking 100 times a second
while a bundle runs costs the bundle nothing measurable, and the stage times are sampled finer.

Only the command's process, where FnApiRunner runs the bundles itself, samples at this period;
a library user's process, a test's, and the workers of a cluster keep Beam's. It is installed only
under the Beam version it was checked against (setup.py pins it); under any other, Beam is left
alone.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.runners.worker import statesampler

from polycap.pipeline.dofn_specs import CHECKED_BEAM_VERSION

SAMPLING_PERIOD_MS = 10


def sample_often() -> bool:
    """Make every step timer made from now on in this process sleep ``SAMPLING_PERIOD_MS`` at
    most; True if installed, False under a Beam version it was not checked against."""
    if beam.__version__ != CHECKED_BEAM_VERSION:
        return False
    # FnApiRunner's bundles make their timer with the period's default (bundle_processor.py).
    statesampler.StateSampler.__init__.__defaults__ = (SAMPLING_PERIOD_MS,)
    return True
