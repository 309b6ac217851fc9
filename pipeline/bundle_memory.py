"""What a bundle leaves in memory, in the ``polycap`` command's process (``command.py`` installs
both): its output buffers let go when it ends, and the memory earlier bundles freed handed back
to the system before it starts, where much of it sits free.

Output buffers. Beam's SDK harness encodes what a bundle sends on to the runner into one output
stream per step that sends, and hands the stream's bytes over each time it holds more than
10 MB. When the bundle ends the stream is closed, but its step keeps it, and with it the C buffer
it grew to (up to 16 MB), until the next bundle of the same stage; and the worker keeps each
stage's steps for reuse. FnApiRunner runs a stage as one large bundle, so every step that sent
much held its buffer for the rest of the run, and the more captions, the more steps filled
theirs: measured with heaptrack, 168 MB of live stream buffers at the peak of a 200,000-caption
run against 22 MB at 20,000. Letting them go when the bundle ends took the scaling benchmark's
peaks from 767 and 953 MB (50,000 and 500,000 captions) to 704 and 830 MB. The next bundle of
the stage is given a new stream, as before.

Freed memory. glibc keeps what a process frees for its own later use, and a stage's bundle
frees what the stage before it held (its input, the runner's copies of it), often where the next
stage does not allocate again; the larger the run, the more of it. So before a bundle starts,
where the heaps hold more than ``FREE_WORTH_RETURNING`` free, it is handed back
(``process_memory``): 27-30 times in a run of 50,000 or 500,000 captions, 0.03-0.08 s in all; the
scaling benchmark's 500,000-caption peak fell to 789 MB while the 50,000-caption one stayed at
697 MB, 1.13x (benchmarks/README.md, session 14).

Only the command's process does either: a library user's process, a test's and the workers of a
cluster (whose bundles are small) keep Beam as it is. Both are installed only under the Beam
version they were checked against (setup.py pins it); under any other, Beam is left alone.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.runners.worker import bundle_processor

from polycap.pipeline.dofn_specs import CHECKED_BEAM_VERSION
from polycap.transforms import process_memory

# Less than this free in the heaps is not worth the hand-back's tens of milliseconds.
FREE_WORTH_RETURNING = 64 << 20


def release_after_bundle() -> bool:
    """Make every step that sends a bundle's output to the runner drop its output stream once
    the bundle has ended and the stream's bytes have gone; True if installed (now or before),
    False under a Beam version it was not checked against."""
    return _install(bundle_processor.DataOutputOperation, "finish", _releasing)


def _releasing(finish):
    def finish_and_release(operation) -> None:
        finish(operation)  # closes the stream: its last bytes go to the runner
        # Beam sets a new stream before the step's next bundle starts (BundleProcessor's
        # process_bundle) and reads this one nowhere after the close.
        operation.output_stream = None

    return finish_and_release


def hand_back_before_bundle() -> bool:
    """Make every bundle start by handing the heaps' free memory back to the system where they
    hold more than ``FREE_WORTH_RETURNING``; True if installed (now or before), False under a
    Beam version it was not checked against."""
    return _install(bundle_processor.BundleProcessor, "process_bundle", _handing_back)


def _handing_back(process_bundle):
    def hand_back_and_process(processor, *args, **kwargs):
        process_memory.return_freed_memory_over(FREE_WORTH_RETURNING)
        return process_bundle(processor, *args, **kwargs)

    return hand_back_and_process


def _install(beams_class, method_name: str, wrap) -> bool:
    """Replace ``beams_class.method_name`` with ``wrap`` of it, once (the replacement is marked
    ``installed_by_polycap``); False, and Beam left alone, under an unchecked version."""
    if beam.__version__ != CHECKED_BEAM_VERSION:
        return False
    method = getattr(beams_class, method_name)
    if not getattr(method, "installed_by_polycap", False):
        wrapped = wrap(method)
        wrapped.installed_by_polycap = True
        setattr(beams_class, method_name, wrapped)
    return True
