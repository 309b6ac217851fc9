"""Progress of a long run: every few seconds, one line on stderr with the rows through each
expensive step (POS tagging, translation, scoring), their rate, and the characters billed so far
against the spending cap.

The stages call ``advance(step, n)`` where they already count with Beam metrics; the line is
printed by a daemon thread of the worker process, only where ``PROGRESS_SECONDS_ENV`` is set:
``polycap run`` sets it for local runners unless ``--quiet`` (its worker processes inherit it),
tests and Dataflow workers do not, and there the same numbers are the stages' Beam counters
(``propn/kept``, ``translate/memory_hits``, ``translate/billed_characters``, ``score/kept``...).
With several worker processes each prints its own share, marked with its process id.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Optional

PROGRESS_SECONDS_ENV = "POLYCAP_PROGRESS_SECONDS"
CAP_ENV = "POLYCAP_PROGRESS_CAP"  # translation.max_characters, for the line's "of N"
STEPS = ("tagged", "translated", "scored", "billed characters")


class _Reporter:
    def __init__(self, every: float, cap: Optional[int]):
        self._every = every
        self._cap = cap
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STEPS, 0)
        self._started = time.monotonic()
        self._printed = dict(self._counts)
        threading.Thread(target=self._loop, name="polycap-progress", daemon=True).start()

    def advance(self, step: str, n: int) -> None:
        with self._lock:
            self._counts[step] += n

    def _loop(self) -> None:
        while True:
            time.sleep(self._every)
            with self._lock:
                counts = dict(self._counts)
            if counts != self._printed:
                print(self.line(counts), file=sys.stderr, flush=True)
                self._printed = counts

    def line(self, counts: dict) -> str:
        elapsed = time.monotonic() - self._started
        parts = [f"progress [pid {os.getpid()}] {int(elapsed) // 60}:{int(elapsed) % 60:02d}"]
        for step in STEPS[:-1]:
            parts.append(f"{step} {counts[step]:,} ({counts[step] / elapsed:,.0f}/s)")
        billed = f"billed {counts['billed characters']:,} characters"
        parts.append(billed + (f" of {self._cap:,}" if self._cap is not None else ""))
        return " | ".join(parts)


_reporter: Optional[_Reporter] = None
_reporter_lock = threading.Lock()


def advance(step: str, n: int = 1) -> None:
    """Add ``n`` to ``step`` (one of ``STEPS``); a no-op unless progress lines are asked for."""
    global _reporter
    every = os.environ.get(PROGRESS_SECONDS_ENV)
    if not every:
        return
    if _reporter is None:
        with _reporter_lock:
            if _reporter is None:
                cap = os.environ.get(CAP_ENV)
                _reporter = _Reporter(float(every), int(cap) if cap else None)
    _reporter.advance(step, n)
