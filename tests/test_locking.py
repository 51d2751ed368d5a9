"""The flock lock manager: its protocol, a holder's death, and one build among concurrent runs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.locking import FlockLockManager


def test_a_held_lock_blocks_others_until_released(tmp_path):
    locks = FlockLockManager(tmp_path)
    key = "templates/abc/.prefect-result"  # slashes in keys are what Prefect's own manager trips on
    assert locks.acquire_lock(key, "a")
    assert locks.is_locked(key) and locks.is_lock_holder(key, "a") and not locks.is_lock_holder(key, "b")
    assert locks.acquire_lock(key, "b", acquire_timeout=0) is False
    assert locks.wait_for_lock(key, timeout=0.2) is False
    with pytest.raises(ValueError, match="No lock held by 'b'"):
        locks.release_lock(key, "b")

    got = []
    waiter = threading.Thread(target=lambda: got.append(locks.acquire_lock(key, "b")))
    waiter.start()
    time.sleep(0.3)
    assert got == []  # still waiting
    locks.release_lock(key, "a")
    waiter.join(5)
    assert got == [True] and locks.is_lock_holder(key, "b")
    locks.release_lock(key, "b")
    assert not locks.is_locked(key)


def test_the_lock_of_a_killed_holder_is_free(tmp_path):
    """kill -9 of the holder releases the lock (Prefect's file locks never expire)."""
    script = (f"import sys, time; sys.path.insert(0, {str(Path.cwd())!r});"
              f"from tasks.locking import FlockLockManager;"
              f"FlockLockManager({str(tmp_path)!r}).acquire_lock('k', 'child'); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        locks = FlockLockManager(tmp_path)
        assert locks.is_locked("k")
        child.kill()
        child.wait(10)
        assert locks.acquire_lock("k", "me", acquire_timeout=5)
        locks.release_lock("k", "me")
    finally:
        child.kill()


def test_concurrent_submissions_of_one_key_build_once(prefect_harness, tmp_path):
    """Four concurrent runs of one SERIALIZABLE cached task: one runs its body, three read the cache."""
    from prefect import flow, task
    from prefect.cache_policies import CacheKeyFnPolicy

    counter = tmp_path / "builds.txt"
    policy = CacheKeyFnPolicy(cache_key_fn=lambda _ctx, params: f"shared/{params['x']}/.prefect-result").configure(
        lock_manager=FlockLockManager(tmp_path / "locks"), isolation_level="SERIALIZABLE")

    @task(cache_policy=policy, persist_result=True, result_storage=tmp_path / "store")
    def build(x: int) -> int:
        with counter.open("a") as fh:
            fh.write("built\n")
        time.sleep(1.0)
        return x * 2

    @flow
    def many():
        futures = [build.submit(3) for _ in range(4)]
        return [f.result() for f in futures], [f.state.name for f in futures]

    values, states = many()
    assert values == [6, 6, 6, 6]
    assert counter.read_text().count("built") == 1
    assert sorted(states) == ["Cached", "Cached", "Cached", "Completed"]


def test_a_removing_lock_excludes_and_leaves_no_file(tmp_path):
    """flocked(remove=True): mutual exclusion across threads that keep taking it while holders
    delete the file, and nothing left afterwards (not even the folder it made)."""
    import threading
    import time

    from tasks.locking import flocked

    path = tmp_path / "kind" / ".partial-k.lock"
    inside, overlaps, rounds = [0], [], []

    def worker():
        for _ in range(20):
            with flocked(path, remove=True):
                inside[0] += 1
                overlaps.append(inside[0])
                time.sleep(0.001)
                inside[0] -= 1
            rounds.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(rounds) == 80 and max(overlaps) == 1
    assert not path.exists() and not path.parent.exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "other").write_text("x")
    with flocked(tmp_path / "kept" / ".l.lock", remove=True):
        pass
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["other"]  # a folder in use stays


def test_a_lock_folder_removed_during_mkdir_is_made_again(tmp_path, monkeypatch):
    """pathlib's mkdir(exist_ok=True) re-raises FileExistsError when the folder it found existing is
    gone by its is_dir() check (a removing holder's rmdir in between: seen once in CI); the taker
    starts over instead of failing."""
    from pathlib import Path

    from tasks.locking import flocked

    real_mkdir, calls = Path.mkdir, []

    def racing_mkdir(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 1:
            raise FileExistsError(17, "File exists", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    path = tmp_path / "kind" / ".partial-k.lock"
    with flocked(path, remove=True):
        assert path.exists()
    assert len(calls) == 2 and not path.parent.exists()
