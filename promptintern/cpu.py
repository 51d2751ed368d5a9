"""How many torch threads a run may use: the cores it can have, shared with the runs beside it.

Why this matters on a CPU: a SmolLM2-135M decode step took 63 ms with one torch thread alone and
**1.9 s** with two threads while another process kept both cores busy (issue 17): OpenMP threads
spin-wait for each other, and on oversubscribed cores each wait lasts a scheduler slice. A Prefect
worker runs up to ``--limit`` flow runs at once, the concurrency tests start two flows on one
machine, and a user may run a sweep beside a benchmark; each run sizing its pool to every core of
the machine is the slow case. So a run takes, in this order:

1. ``PROMPTINTERN_THREADS`` when set (the user's word; ``OMP_NUM_THREADS`` is honoured the same way);
2. else its usable cores divided by the runs of this project active on the machine, at least 1.
   Usable cores: the process's affinity mask (``taskset``, cpusets), capped by a cgroup v2 CPU
   quota (``docker --cpus``), which the mask does not show. Active runs: every flow run holds a
   **run lease** (``run_lease``), an ``flock`` on its own file in ``PROMPTINTERN_LEASE_DIR``
   (default ``<tmp>/promptintern-runs-<uid>``); the OS drops the lock when the process dies,
   however it dies, and the next count removes the file.

The count is taken when a model box starts (``set_torch_threads``), so runs that start later make
the later boxes of earlier runs smaller; a box already running keeps its pool.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import tempfile
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_held: dict[str, object] = {}  # this process's lease: {"fd": int, "path": Path, "count": int}
_lock = threading.Lock()


def lease_dir() -> Path:
    return Path(os.environ.get("PROMPTINTERN_LEASE_DIR")
                or Path(tempfile.gettempdir()) / f"promptintern-runs-{os.getuid()}")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


@contextmanager
def run_lease(directory: Path | None = None) -> Iterator[Path]:
    """Count this process as one active run while the block runs. One lease per process however
    many flows it nests or runs in threads: torch's thread pool is per process."""
    directory = Path(directory) if directory is not None else lease_dir()
    with _lock:
        if not _held:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            _held.update(fd=fd, path=path, count=0)
        _held["count"] += 1
        path = _held["path"]
    try:
        yield path
    finally:
        with _lock:
            _held["count"] -= 1
            if _held["count"] == 0:
                Path(_held["path"]).unlink(missing_ok=True)
                os.close(_held["fd"])
                _held.clear()


def active_runs(directory: Path | None = None) -> int:
    """Runs holding a lease now (this one included, if it holds one). A lease file whose lock is free
    was left by a process that died: it is removed."""
    directory = Path(directory) if directory is not None else lease_dir()
    count = 0
    for path in directory.glob("*.lock") if directory.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # released meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            count += 1  # held: a live run
        else:
            path.unlink(missing_ok=True)  # a dead run's file
        finally:
            os.close(fd)
    return count


def torch_threads(cpu_max: Path = CGROUP_CPU_MAX, directory: Path | None = None) -> tuple[int, str]:
    """The thread count for this process's next model box, and why."""
    value = os.environ.get("PROMPTINTERN_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"PROMPTINTERN_THREADS={value!r}: give a whole number of threads, at least 1")
        return int(value), f"PROMPTINTERN_THREADS={value}"
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) >= 1:  # OpenMP's own forms ("4,2") are left to torch
        return int(value), f"OMP_NUM_THREADS={value}"
    cores, runs = usable_cores(cpu_max), max(1, active_runs(directory))
    return max(1, cores // runs), f"{cores} usable cores / {runs} active runs"


def set_torch_threads() -> int:
    """Size torch's intra-op pool for the box about to run (``torch_threads``); the count set."""
    import torch

    threads, why = torch_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        log.info("torch threads: %d (%s)", threads, why)
    return threads
