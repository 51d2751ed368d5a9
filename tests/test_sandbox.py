"""The sandbox as a process runner: modes, limits, clean environment, parallel workers, cleanup.

Hostile programs are in test_sandbox_hostile.py; the pass/fail verdict in test_execution.py.
"""

from __future__ import annotations

import logging
import os
import time

import pytest

from promptintern.sandbox import (BASE_UID, MAX_SLOTS, MODES, Sandbox, is_root, live_pids, mode_available,
                                  pick_mode)


@pytest.fixture(scope="module", params=MODES)
def sandbox(request):
    ok, why = mode_available(request.param)
    if not ok:
        pytest.skip(why)
    with Sandbox(mode=request.param, workers=2, timeout_s=3, memory_mb=256, output_kb=256, tail_kb=8) as sb:
        yield sb


def test_auto_picks_the_strongest_working_mode_and_logs_it(caplog):
    mode, why = pick_mode()
    expected = next(m for m in MODES if mode_available(m)[0])
    assert mode == expected, why
    with caplog.at_level(logging.INFO, logger="promptintern.sandbox"):
        with Sandbox(mode="auto", workers=1) as sb:
            assert sb.mode == mode
    assert f"sandbox mode: {mode}" in caplog.text


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="mode='docker'"):
        Sandbox(mode="docker")
    with pytest.raises(ValueError, match="workers=0"):
        Sandbox(mode="rlimits", workers=0)


def test_root_only_modes_say_why_they_are_unavailable():
    for mode in ("bwrap", "namespaces"):
        ok, why = mode_available(mode)
        if not is_root():
            assert not ok and "root" in why


def test_output_exit_status_and_clean_env(sandbox, monkeypatch):
    monkeypatch.setenv("PROMPTINTERN_PARENT_SECRET", "hunter2")
    v = sandbox.run("import os, sys\nprint('out'); print('err', file=sys.stderr)\n"
                    "print(sorted(os.environ))\nprint(os.getcwd())\nsys.exit(3)")
    assert v.status == "failed" and v.returncode == 3
    assert v.stdout.startswith("out\n") and v.stderr == "err\n"
    assert "hunter2" not in v.stdout and "PROMPTINTERN_PARENT_SECRET" not in v.stdout
    assert "'PATH'" in v.stdout and "VIRTUAL_ENV" not in v.stdout
    assert v.mode == sandbox.mode and v.wall_s > 0


def test_setup_runs_first_and_stdin_is_empty(sandbox):
    v = sandbox.run("print(X)\ntry:\n    input()\nexcept EOFError:\n    print('eof')", setup="X = 41 + 1")
    assert v.status == "passed" and v.stdout == "42\neof\n"


def test_isolated_python_and_dropped_uid(sandbox):
    v = sandbox.run("import os, sys\nprint(sys.flags.isolated, os.getuid(), os.getgid(), os.getgroups())")
    isolated, uid, gid, groups = v.stdout.split(maxsplit=3)
    assert isolated == "1"
    if is_root():
        assert BASE_UID <= int(uid) < BASE_UID + MAX_SLOTS and gid == uid and groups.strip() == "[]"
        assert v.uid == int(uid)


def test_the_program_can_write_its_temp_dir(sandbox):
    v = sandbox.run("import os, tempfile\nopen('a.txt', 'w').write('x')\n"
                    "with tempfile.NamedTemporaryFile() as fh: fh.write(b'y')\nprint(os.listdir('.'))")
    assert v.status == "passed" and "a.txt" in v.stdout


def test_timeout(sandbox):
    """CPU time judges a slow program; a separate, longer wall-clock guard stops one that sleeps."""
    start = time.monotonic()
    v = sandbox.run("import time\nwhile True: time.sleep(0.1)")
    assert v.status == "timeout" and "wall-clock guard" in v.detail
    assert sandbox.wall_s == 3 * sandbox.timeout_s and time.monotonic() - start < sandbox.wall_s + 3
    busy = sandbox.run("while True: pass")
    assert busy.status == "timeout" and "CPU limit (3 s of CPU time)" in busy.detail
    # a program that waits longer than its CPU limit but computes little passes: the machine's
    # load (which stretches wall time) does not decide the verdict
    slow = sandbox.run(f"import time\ntime.sleep({sandbox.timeout_s + 1})\nprint('done')")
    assert slow.status == "passed" and slow.stdout.strip() == "done"


def test_memory_limit(sandbox):
    v = sandbox.run("x = bytearray(512 << 20)")
    assert v.status == "blocked" and "MemoryError" in v.detail


def test_output_is_capped_and_read_back_truncated(sandbox):
    v = sandbox.run("import sys\nfor i in range(10**6): sys.stdout.write('%09d\\n' % i)")
    assert v.status == "blocked" and "output limit" in v.detail
    assert v.stdout_truncated and len(v.stdout) <= sandbox.tail_kb << 10


def test_run_many_keeps_order_and_runs_in_parallel(sandbox):
    programs = [f"import time, os\ntime.sleep(0.6)\nprint({i}, os.getuid())" for i in range(4)]
    start = time.monotonic()
    verdicts = sandbox.run_many(programs)
    elapsed = time.monotonic() - start
    assert [v.stdout.split()[0] for v in verdicts] == ["0", "1", "2", "3"]
    assert elapsed < 4 * 0.6 + 0.5, f"{elapsed:.2f} s: not parallel"
    if is_root():
        assert all(BASE_UID <= v.uid < BASE_UID + MAX_SLOTS for v in verdicts)


def test_run_many_accepts_program_setup_pairs(sandbox):
    verdicts = sandbox.run_many([("print(A)", "A = 1"), "print(2)"])
    assert [v.stdout for v in verdicts] == ["1\n", "2\n"]


def test_temp_dirs_are_removed(sandbox):
    sandbox.run("open('junk', 'w').write('x' * 1000)")
    assert list(sandbox._base.iterdir()) == []


def test_close_removes_the_base_dir():
    sb = Sandbox(mode=pick_mode()[0], workers=1)
    base = sb._base
    sb.run("print(1)")
    sb.close()
    assert not base.exists()


@pytest.mark.skipif(not is_root(), reason="worker uids need root")
def test_worker_uids_are_not_shared_between_holders():
    mode = pick_mode()[0]
    with Sandbox(mode=mode, workers=1) as a, Sandbox(mode=mode, workers=1) as b:
        with a.worker_uid() as uid_a, b.worker_uid() as uid_b:
            assert uid_a != uid_b
            assert a.run("import os; print(os.getuid())", uid=uid_a).stdout.strip() == str(uid_a)


def test_environment_marker_is_not_the_parents_environment(sandbox):
    v = sandbox.run("import os; print(os.environ.get('HOME'), os.environ.get('TMPDIR'))")
    home, tmpdir = v.stdout.split()
    assert home == tmpdir and home != os.environ.get("HOME")


@pytest.mark.skipif(not is_root(), reason="worker uids need root")
def test_runs_leave_no_process_of_the_worker_uid_not_even_a_zombie(sandbox):
    """Zombies count against RLIMIT_NPROC: left for the host's init to reap (it may take seconds),
    they would pile up over a batch and the next runs could not fork (seen with bwrap's PID 1)."""
    with sandbox.worker_uid() as uid:
        sandbox.run("import os\nif os.fork() == 0:\n    os._exit(0)\nprint(1)", uid=uid)
        for _ in range(5):
            sandbox.run("print(1)", uid=uid)
            assert live_pids(uid, zombies=True) == []
