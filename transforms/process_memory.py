"""Hand the memory a process freed back to the system, where that memory would otherwise sit
under what the process allocates next.

glibc's allocator keeps what a process frees for its own later use. A worker on the in-process
runner frees the buffers of each finished stage (at 500,000 captions the read alone leaves
several hundred MB), but what comes next is often not allocated there: a model's arrays are
mapped afresh, the audit's Python objects live in pymalloc's arenas and its Arrow buffers in
mimalloc's. So the process hands freed memory back before it loads a model (``encoders``,
``pos_tagger``: once per process) and, in the ``polycap`` command, before each bundle where the
heaps hold much free (``pipeline/bundle_memory.py``) and when the run has ended, before the audit
reads the output. ``malloc_trim(0)`` returns every free page of glibc's heaps;
it takes some 20 ms.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Callable, Optional


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim``, looked up among the symbols the process has loaded (no
    ``find_library``, which starts ``ldconfig``), or None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, TypeError, AttributeError):  # musl, macOS, Windows: no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    return trim


def return_freed_memory() -> bool:
    """Return the free memory of the C allocator's heaps to the system: True where some was
    returned, False where there was none to return or the C library cannot (not glibc)."""
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]


@functools.lru_cache(maxsize=1)
def _mallinfo2() -> Optional[Callable[[], _MallInfo2]]:
    """glibc's ``mallinfo2`` (glibc 2.33 and later), or None where the C library has none."""
    try:
        info = ctypes.CDLL(None).mallinfo2
    except (OSError, TypeError, AttributeError):
        return None
    info.restype = _MallInfo2
    return info


def free_heap_bytes() -> Optional[int]:
    """Bytes the C allocator's heaps hold free (resident or not), or None where it cannot say."""
    info = _mallinfo2()
    return None if info is None else info().fordblks


def return_freed_memory_over(free_bytes: int) -> bool:
    """``return_freed_memory`` where the heaps hold more than ``free_bytes`` free; True where
    some was returned. Asking costs about a millisecond; returning, tens of them."""
    free = free_heap_bytes()
    return free is not None and free > free_bytes and return_freed_memory()
