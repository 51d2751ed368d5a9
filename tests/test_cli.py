"""The command line: nothing a run starts outlives it, even after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _children(pid: int) -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out[int(name)] = cmd
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard uses /proc and PR_SET_PDEATHSIG")
def test_kill_9_of_a_run_leaves_no_process_behind(tmp_path):
    # the example task's data is in the repository: nothing to fetch first
    run = subprocess.Popen([sys.executable, "-m", "flows.dag", "--preset", "tiny", "--task",
                            "examples/unit-conversion/task.yaml", "--artifact-root", str(tmp_path / "artifacts")],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("w"),
                           start_new_session=True)
    try:
        deadline, server = time.time() + 120, None
        while server is None and time.time() < deadline and run.poll() is None:
            server = next((pid for pid, cmd in _children(run.pid).items() if "uvicorn" in cmd), None)
            time.sleep(0.2)
        assert server is not None, f"Prefect's temporary server never started: {(tmp_path / 'stderr').read_text()[-2000:]}"
        started = set(_children(run.pid))  # the server, the guard, anything else the run started
        time.sleep(1.0)  # the guard records children every 0.2 s
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.time() + 15
        while any(_alive(pid) for pid in started) and time.time() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in started if _alive(pid)], {pid: _children(1).get(pid) for pid in started}
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
