"""Run one command as a child process and measure it: wall time, CPU time, peak memory.

Peak memory is measured two ways:
- ``peak_tree_rss_mb``: the largest sum of resident set sizes over the child and all its
  descendants (Beam's ``multi_processing`` workers are subprocesses of the driver), sampled
  from ``/proc`` every ``SAMPLE_SECONDS``; a sum of RSS counts shared library pages once per
  process, so it slightly overstates a multi-process tree;
- ``max_rss_mb``: ``ru_maxrss`` from ``wait4``: the peak of the largest single process (the
  child, or the largest of the descendants it reaped), exact but not a sum.
CPU seconds are user + system time of the child and every descendant it waited for: on a
machine shared with other work, CPU time moves far less than wall time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

SAMPLE_SECONDS = 0.2
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_MB = 1024 * 1024


class Measured(NamedTuple):
    returncode: int
    wall_s: float
    cpu_s: float
    peak_tree_rss_mb: float
    max_rss_mb: float
    log: str


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                # pid (comm) state ppid ...; comm may hold spaces, so split after its ')'.
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def accepted_fingerprint(accepted) -> dict:
    """What "the same accepted pairs" compares: per language, how many, and one sha256 over the
    sorted (language, caption_id, translation) triples, so two runs that accept as many pairs
    but not the same ones differ."""
    triples = sorted((str(lang), str(caption_id), str(text)) for lang, caption_id, text in accepted)
    counts: dict[str, int] = {}
    digest = hashlib.sha256()
    for triple in triples:
        counts[triple[0]] = counts.get(triple[0], 0) + 1
        digest.update(("\t".join(triple) + "\n").encode("utf-8"))
    return {"pairs": dict(sorted(counts.items())), "sha256": digest.hexdigest()}


def tree_rss_bytes(root: int) -> int:
    """Sum of the resident set sizes of ``root`` and its descendants (0 once it is gone)."""
    children = _children_by_parent()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * _PAGE_BYTES
        except OSError:
            continue
        stack.extend(children.get(pid, ()))
    return total


class _TreeSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self._pid = pid
        self._done = threading.Event()
        self.peak = 0

    def run(self):
        while not self._done.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self._pid))
            self._done.wait(SAMPLE_SECONDS)

    def stop(self):
        self._done.set()
        self.join()


def run(
    command: Sequence[str],
    cwd: Path,
    log_path: Path,
    env: Optional[dict] = None,
    timeout_s: Optional[float] = None,
) -> Measured:
    """Run ``command`` in ``cwd`` with stdout and stderr to ``log_path``; measure it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        deadline = None if timeout_s is None else started + timeout_s
        while True:
            # wait4 (not Popen.wait) returns the child's resource usage, its reaped children's included.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
            time.sleep(0.05)
        wall = time.perf_counter() - started
        sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        returncode=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_tree_rss_mb=sampler.peak / _MB,
        max_rss_mb=usage.ru_maxrss / 1024,  # Linux reports kilobytes
        log=str(log_path),
    )
