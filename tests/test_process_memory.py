"""Freed memory goes back to the system (transforms/process_memory.py): measured in a process of
its own, whose heap holds only what the test puts there."""

import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# 200 MB of 4 kB strings (each its own glibc heap block) freed below a block still in use, so
# the allocator cannot give the freed pages back on its own: only the hand-back can.
_FREED_BUT_KEPT = """
import json
from polycap.transforms import process_memory

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

blocks = [bytes(4000) + bytes([i % 256]) for i in range(50_000)]
still_used = bytes(4000) + b"x"
allocated = rss_mb()
del blocks
freed = rss_mb()
returned = process_memory.return_freed_memory()
print(json.dumps({"allocated": allocated, "freed": freed, "after": rss_mb(), "returned": returned}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's")
def test_freed_memory_goes_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", _FREED_BUT_KEPT], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    rss = json.loads(out)
    assert rss["freed"] > rss["allocated"] - 20  # freeing alone keeps the pages
    assert rss["returned"] is True
    assert rss["after"] < rss["freed"] - 150  # the hand-back returns them

