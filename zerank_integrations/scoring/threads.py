"""How many CPU threads one process computes with, so that several processes on one machine share its cores.

torch (and OpenVINO) start one compute thread per core in *every* process: two servers, or a server and an
ingest, on one laptop each run a thread per core and the cores are oversubscribed (each pass waits on threads
the other process is running). The rule here, applied once per process when the first scorer or embedder
loads:

- ``threads=`` (``--threads``) or ``$ZERANK_THREADS``: exactly that many;
- otherwise the process *leases* cores: it takes every core of its CPU set that no other zerank process holds
  (an exclusive ``flock`` per core in a folder of the temp dir, released when the process exits), and at least
  one. The first process on an idle machine gets all cores, as torch would give it; a second gets what is left.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import IO

THREADS_ENV = "ZERANK_THREADS"
LEASE_DIR_ENV = "ZERANK_CORE_LEASES"

_lock = threading.Lock()
_chosen: int | None = None
_leases: list[IO[str]] = []  # open lock files: a lease lives as long as this process


def available_cores() -> int:
    """Cores this process may run on (its CPU set, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def _from_env() -> int | None:
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"${THREADS_ENV} must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise ValueError(f"${THREADS_ENV} must be a whole number >= 1, got {text!r}")
    return value


def lease_cores(folder: Path | None = None) -> int:
    """Take every core no other process holds a lease on (at least one counts, leased or not)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no leases, torch's default
        return available_cores()
    folder = folder or Path(os.environ.get(LEASE_DIR_ENV) or Path(tempfile.gettempdir()) / "zerank-core-leases")
    folder.mkdir(parents=True, exist_ok=True)
    taken = 0
    for core in range(available_cores()):
        handle = open(folder / f"core-{core}.lock", "a+")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _leases.append(handle)
        taken += 1
    return max(taken, 1)


def intra_op_threads(threads: int | None = None) -> int:
    """The thread count of this process: ``threads`` if given, else ``$ZERANK_THREADS``, else leased cores
    (decided once; what torch and every OpenVINO model of the process use)."""
    global _chosen
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        with _lock:
            _chosen = threads  # what later OpenVINO models of this process use too
        return threads
    with _lock:
        if _chosen is None:
            _chosen = _from_env() or lease_cores()
        return _chosen


def apply_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to :func:`intra_op_threads` and return the count."""
    import torch

    count = intra_op_threads(threads)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
