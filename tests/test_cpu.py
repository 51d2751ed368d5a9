"""Each run sizes its torch threads to the cores it can have, shared with the runs beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from promptintern import cpu

HOLD = """
import sys, time
from pathlib import Path
from promptintern.cpu import run_lease
with run_lease(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def leases(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTINTERN_LEASE_DIR", str(tmp_path / "leases"))
    monkeypatch.delenv("PROMPTINTERN_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return tmp_path / "leases"


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_beside_another_gets_half_the_cores(leases, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    no_quota = tmp_path / "cpu.max"
    no_quota.write_text("max 100000\n")
    assert cpu.torch_threads(no_quota)[0] == 4  # alone, no lease: every usable core
    other = _holder(leases)
    try:
        with cpu.run_lease():
            assert cpu.active_runs() == 2
            threads, why = cpu.torch_threads(no_quota)
            assert threads == 2 and why == "4 usable cores / 2 active runs"
            with cpu.run_lease():  # nested flows of one process: still one run
                assert cpu.active_runs() == 2
    finally:
        other.kill()
        other.wait()
    assert cpu.active_runs() == 0


def test_a_killed_run_stops_counting_and_its_file_goes(leases):
    other = _holder(leases)
    assert cpu.active_runs() == 1 and len(list(leases.glob("*.lock"))) == 1
    other.send_signal(signal.SIGKILL)
    other.wait()
    assert cpu.active_runs() == 0  # the OS dropped the lock with the process
    assert list(leases.glob("*.lock")) == []


def test_usable_cores_follow_the_affinity_mask_and_the_cgroup_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    quota = tmp_path / "cpu.max"
    quota.write_text("250000 100000\n")  # docker --cpus 2.5
    assert cpu.usable_cores(quota) == 3
    quota.write_text("max 100000\n")
    assert cpu.usable_cores(quota) == 8
    assert cpu.usable_cores(tmp_path / "missing") == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {3})  # taskset -c 3
    assert cpu.usable_cores(quota) == 1


def test_an_explicit_thread_count_wins_and_a_bad_one_is_named(leases, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu.torch_threads() == (3, "OMP_NUM_THREADS=3")
    monkeypatch.setenv("PROMPTINTERN_THREADS", "5")
    assert cpu.torch_threads() == (5, "PROMPTINTERN_THREADS=5")
    monkeypatch.setenv("PROMPTINTERN_THREADS", "many")
    with pytest.raises(ValueError, match="PROMPTINTERN_THREADS='many'"):
        cpu.torch_threads()


def test_set_torch_threads_sizes_the_pool(leases, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("PROMPTINTERN_THREADS", "1")
    try:
        assert cpu.set_torch_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
