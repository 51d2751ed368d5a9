"""A Prefect lock manager on ``fcntl.flock``, so a cached box runs once however many runs want it.

Why: a sweep fans variants out as concurrent flow runs (threads, processes, or workers sharing one
artifact root); they all need the same prepared model, dataset, compressed templates and retrieval
bank. With Prefect's SERIALIZABLE isolation the first run to reach a cache key takes its lock and
computes; the others block on the lock, then find the committed record and report ``Cached``.

Why not Prefect's own ``FileSystemLockManager`` (3.9.1): keys containing ``/`` (ours are
``<kind>/<key>/.prefect-result``) raise FileNotFoundError, lock files are written non-atomically
(readers saw empty files), and a lock never expires, so after a ``kill -9`` the next run of that key
hung (see ../shared/PREFECT.md). ``flock`` locks belong to an open file description: the OS releases
them when the holder dies, however it dies, and they conflict between threads of one process too.

Lock files live in ``PROMPTINTERN_LOCK_DIR`` (default ``$PREFECT_HOME/locks``); machines that share
an artifact root over a network file system should point it at a folder on that file system.

``flocked(path)`` is the same lock as a plain context manager: ``tasks.caching.materialize`` holds
one per artifact folder, inside the artifact root, so that two builders of one key never share its
``.partial-<key>`` folder even when they do not share Prefect's lock directory (two
``PREFECT_HOME``s) or run without Prefect at all.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import anyio

POLL_SECONDS = 0.1

# Held locks of this process, by (lock file, holder) -> open file descriptor. Module level, not on
# the manager: Prefect copies cache policies (and with them the manager) and pickles them to workers.
_HELD: dict[tuple[str, str], int] = {}
_HELD_GUARD = threading.Lock()


def default_lock_dir() -> Path:
    if os.environ.get("PROMPTINTERN_LOCK_DIR"):
        return Path(os.environ["PROMPTINTERN_LOCK_DIR"])
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "locks"


@contextmanager
def flocked(path: str | Path, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block; waits for
    a live holder, never for a dead one. Conflicts between threads of one process too.

    ``remove``: the holder deletes the lock file (and its folder, when that is left empty) before
    it lets go, so locks leave no files behind. Safe because every taker checks, once it holds
    the lock, that the path still names the file it locked; a taker that locked a file unlinked
    meanwhile starts over on the new one."""
    path = Path(path)
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except (FileNotFoundError, FileExistsError):
            # a holder removed the folder between mkdir and open, or between mkdir's own os.mkdir and
            # its is_dir() check (pathlib then re-raises FileExistsError: seen once in CI): again
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current or not remove:
            break
        os.close(fd)  # we locked a file its last holder removed: take the lock at the path again
    try:
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # only when empty
            except OSError:
                pass
        os.close(fd)  # closing the last descriptor of the open file releases the lock


class FlockLockManager:
    """Implements ``prefect.locking.protocol.LockManager`` with one ``flock``-ed file per key.

    ``hold_timeout`` is not enforced: a lock is released by its holder or by the holder's death.
    """

    def __init__(self, lock_dir: str | Path | None = None) -> None:
        self.lock_dir = str(lock_dir) if lock_dir is not None else None

    def _path(self, key: str) -> str:
        folder = Path(self.lock_dir) if self.lock_dir else default_lock_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"))

    def acquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None,
                     hold_timeout: Optional[float] = None) -> bool:
        path = self._path(key)
        with _HELD_GUARD:
            if (path, holder) in _HELD:
                return True  # re-entrant for the same holder
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(POLL_SECONDS)
        with _HELD_GUARD:
            _HELD[(path, holder)] = fd
        return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: Optional[float] = None,
                            hold_timeout: Optional[float] = None) -> bool:
        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        path = self._path(key)
        with _HELD_GUARD:
            fd = _HELD.pop((path, holder), None)
        if fd is None:
            raise ValueError(f"No lock held by {holder!r} for transaction with key {key!r}")
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def is_locked(self, key: str) -> bool:
        fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with _HELD_GUARD:
            return (self._path(key), holder) in _HELD

    def wait_for_lock(self, key: str, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    async def await_for_lock(self, key: str, timeout: Optional[float] = None) -> bool:
        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)
