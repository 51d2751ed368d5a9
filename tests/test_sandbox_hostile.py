"""Hostile programs against every available sandbox mode (unavailable modes are skipped, with why).

Each program is an MBPP-style completion whose test, ``assert attack() == 'pwned'``, passes only if
the attack worked. Every run must end failed / blocked / timeout, leave no process of its worker uid
running, leave the decoy $HOME intact, leave no file of the worker uid in a world-writable
directory, and leave nothing in the sandbox's own work area; in the isolated modes the listener on
127.0.0.1 must see no connection. The rlimits mode is held only to what its docstring claims:
``NOT_CLAIMED`` lists what it does not protect (the run may then "pass": the attack worked).

    pytest tests/test_sandbox_hostile.py -v      # ~1 min on 2 cores; the table: benchmarks/bench_sandbox.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from promptintern.evaluate.execution import build_program, judge, plan_test
from promptintern.sandbox import MODES, WORLD_WRITABLE, Sandbox, is_root, live_pids, mode_available

LIMITS = dict(workers=1, timeout_s=2, memory_mb=256, disk_mb=16, output_kb=1024, nproc=32)
TEST = ["assert attack() == 'pwned'"]

# The rlimits mode makes no claim about these (see promptintern/sandbox.py); as a normal user it
# also runs as you, so your $HOME and your processes' environment are yours to lose.
NOT_CLAIMED = {"connect_localhost", "disk_fill"} | (set() if is_root() else {"delete_home", "parent_environ"})

HOSTILE = {
    "infinite_loop": """
def attack():
    while True:
        pass
""",
    "ignore_sigterm": """
import signal, time
def attack():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    while True:          # sleeps: the CPU limit never fires, only the wall clock and SIGKILL
        time.sleep(0.05)
""",
    "fork_bomb": """
import os, time
def attack():
    for _ in range(100):             # bounded: 100 children, 8 processes each, if nothing stops it
        if os.fork() == 0:           # in the parent, running out of processes raises: the run ends
            for _ in range(3):
                try:
                    os.fork()
                except OSError:
                    pass
            time.sleep(60)           # they linger: cleanup must kill them
            os._exit(0)
    return 'pwned'
""",
    "memory_bomb": """
def attack():
    hog = []
    while True:
        hog.append(bytearray(16 << 20))
""",
    "disk_fill": """
import os
def attack():
    written = 0
    for d in ('.', '/tmp', '/var/tmp', '/dev/shm', '/run/lock'):
        for i in range(200):
            try:
                with open(os.path.join(d, 'fill-%d' % i), 'wb') as fh:
                    for _ in range(8):
                        fh.write(b'x' * (1 << 20))
                        fh.flush()
                        written += 1 << 20
            except OSError as err:
                if err.errno != 27:      # EFBIG: this file is full; anything else: this dir is
                    break
            if written >= 128 << 20:
                return 'pwned'
    return written
""",
    "huge_stdout": """
import sys
def attack():
    while True:
        sys.stdout.write('x' * 65536)
""",
    "read_shadow": """
def attack():
    with open('/etc/shadow') as fh:
        return 'pwned' if fh.read() else 'empty'
""",
    "parent_environ": """
import os
def attack():
    for pid in (PARENT_PID, os.getppid()):
        with open('/proc/%d/environ' % pid, 'rb') as fh:
            if b'PATH=' in fh.read() and pid == PARENT_PID:
                return 'pwned'
    return 'not the parent'
""",
    "signal_pid1": """
import os, signal
def attack():
    os.kill(1, 0)
    with open('/proc/1/stat') as fh:
        start = fh.read().rsplit(')', 1)[1].split()[19]
    os.kill(1, signal.SIGCONT)       # harmless even to a real init
    return 'pwned' if start == HOST_INIT_START else 'a namespace init, not the host init'
""",
    "connect_localhost": """
import socket
def attack():
    socket.create_connection(('127.0.0.1', PORT), timeout=2).close()
    return 'pwned'
""",
    "delete_home": """
import os, shutil
def attack():
    shutil.rmtree(DECOY_HOME)
    return 'pwned' if not os.path.exists(DECOY_HOME) else 'still there'
""",
    "setsid_daemon": """
import os, sys, time
def attack():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(120)', DAEMON_TOKEN])
        os._exit(0)
    time.sleep(0.3)
    return 'daemon started'
""",
    "always_true_eq": """
class Liar:
    def __eq__(self, other):
        return True
    __hash__ = None
    def __repr__(self):
        return "'pwned'"
def attack():
    return Liar()
""",
}


@pytest.fixture(scope="module", params=MODES)
def sandbox(request):
    ok, why = mode_available(request.param)
    if not ok:
        pytest.skip(why)
    with Sandbox(mode=request.param, **LIMITS) as sb:
        yield sb


class Listener:
    """A bounded in-process TCP listener on 127.0.0.1 that records every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port, self.seen, self._stop = self.sock.getsockname()[1], [], threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except OSError:
                continue
            self.seen.append(addr)
            conn.close()

    def __enter__(self) -> "Listener":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def make_decoy_home() -> Path:
    """A decoy $HOME in the real home directory, where a real one would be."""
    home = Path(tempfile.mkdtemp(prefix="promptintern-decoy-home-", dir=Path.home()))
    home.chmod(0o755)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("decoy key\n")
    (home / "notes.txt").write_text("decoy\n")
    return home


def hostile_source(name: str, port: int, decoy_home: Path, daemon_token: str) -> tuple[str, list, str]:
    """(program, plans, nonce) for one hostile program, with the constants it needs."""
    with open("/proc/1/stat") as fh:
        host_init_start = fh.read().rsplit(")", 1)[1].split()[19]
    constants = (f"PARENT_PID = {os.getpid()}\nHOST_INIT_START = {host_init_start!r}\nPORT = {port}\n"
                 f"DECOY_HOME = {str(decoy_home)!r}\nDAEMON_TOKEN = {daemon_token!r}\n")
    plans = [plan_test(t) for t in TEST]
    source, nonce = build_program(constants + HOSTILE[name], plans)
    return source, plans, nonce


@pytest.fixture(scope="module")
def listener():
    with Listener() as lst:
        yield lst


@pytest.fixture()
def decoy_home():
    home = make_decoy_home()
    yield home
    shutil.rmtree(home, ignore_errors=True)


def _snapshot(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def _uid_files(uid: int) -> list[str]:
    """Entries owned by ``uid`` at the top of the host's world-writable directories."""
    found = []
    for d in {os.path.realpath(d) for d in WORLD_WRITABLE if os.path.isdir(d)}:
        for entry in os.scandir(d):
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    found.append(entry.path)
            except OSError:
                pass
    return found


def _pids_with(token: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
        except OSError:
            pass
    return [p for p in pids if p != os.getpid()]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program(sandbox, name, listener, decoy_home):
    before_connections = len(listener.seen)
    daemon_token = "promptintern-daemon-" + secrets.token_hex(6)
    decoy_before = _snapshot(decoy_home)
    source, plans, nonce = hostile_source(name, listener.port, decoy_home, daemon_token)

    with sandbox.worker_uid() as uid:
        verdict = judge(sandbox.run(source, uid=uid), plans, nonce)
        left_running = live_pids(uid) if is_root() else []
        left_files = _uid_files(uid) if is_root() else []
    daemons = _pids_with(daemon_token)
    for pid in daemons:  # do not leave it behind even when the test fails
        os.kill(pid, signal.SIGKILL)

    claimed = not (sandbox.mode == "rlimits" and name in NOT_CLAIMED)
    print(f"{sandbox.mode:10s} {name:18s} {verdict.status:8s} {verdict.detail[:100]}")
    if claimed:
        assert verdict.status in ("failed", "blocked", "timeout"), verdict
    assert not left_running, f"processes of uid {uid} left running: {left_running}"
    assert not daemons, f"daemon outlived the run: {daemons}"
    assert not left_files, f"files of uid {uid} left outside the temp dir: {left_files}"
    assert list(sandbox._base.iterdir()) == [], "the run's temp dir was not removed"
    if not (sandbox.mode == "rlimits" and "delete_home" in NOT_CLAIMED):
        assert decoy_home.is_dir() and _snapshot(decoy_home) == decoy_before, "decoy $HOME changed"
    if sandbox.mode != "rlimits":
        assert len(listener.seen) == before_connections, "the program reached 127.0.0.1 on the host"
    if name == "huge_stdout":
        assert len(verdict.stdout) <= sandbox.tail_kb << 10
    if name in ("infinite_loop", "ignore_sigterm"):
        assert verdict.status == "timeout"
        assert verdict.wall_s < LIMITS["timeout_s"] + 5


# ---------------------------------------------------------------------------------------------
# the same attacks from a normal user's evaluator (CI runs as root: the test drops to nobody)
# ---------------------------------------------------------------------------------------------

NON_ROOT_DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import sandbox
repo = sys.argv[2]
attacks = {
    "kill_parent": "import os\nos.kill(os.getppid(), 9)",
    "kill_everything": "import os, signal\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) != os.getpid():\n        try:\n            os.kill(int(p), signal.SIGKILL)\n        except OSError:\n            pass",
    "write_repository": f"open({repo!r} + '/pwned.txt', 'w').write('x')",
    "write_tmp": "open('/tmp/pwned-by-sandbox.txt', 'w').write('x')",
}
mode, why = sandbox.pick_mode()
with sandbox.Sandbox(mode=mode, workers=2, timeout_s=3) as sb:
    verdicts = dict(zip(attacks, sb.run_many(list(attacks.values()))))
print(json.dumps({"mode": mode, "why": why, "verdicts": {k: [v.status, v.detail] for k, v in verdicts.items()}}))
"""


def _as_nobody(cmd: list[str]) -> list[str]:
    return (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] if is_root() else []) + cmd


def test_a_normal_users_evaluator_survives_and_nothing_is_written_outside():
    """As a normal user the sandbox uses unprivileged user namespaces (bwrap) where the kernel
    allows them: a program that kills its parent or every process it can signal leaves the
    evaluator and the user's other processes alive, and writes nothing into the repository or /tmp."""
    import json
    import subprocess
    import sys

    python = "/usr/bin/python3"
    if not Path(python).exists():
        pytest.skip("no /usr/bin/python3 for the unprivileged evaluator")
    if is_root() and not shutil.which("setpriv"):
        pytest.skip("setpriv is needed to drop to an unprivileged user")
    userns = subprocess.run(_as_nobody(["unshare", "--user", "--map-root-user", "true"]), capture_output=True)
    tmp_path = Path(tempfile.mkdtemp(prefix="nonroot-sandbox-"))  # pytest's own tmp dirs are root-only
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "promptintern" / "sandbox.py", lib / "sandbox.py")
    repo = tmp_path / "repository"
    repo.mkdir()
    for path in (tmp_path, lib, lib / "sandbox.py", repo):
        path.chmod(0o777 if path == repo else 0o755)
    if is_root():
        os.chown(repo, 65534, 65534)
    bystander = subprocess.Popen(_as_nobody(["sleep", "60"]))  # another process of the same user
    try:
        run = subprocess.run(_as_nobody([python, "-c", NON_ROOT_DRIVER, str(lib), str(repo)]), capture_output=True,
                             text=True, timeout=180, cwd="/")
        assert run.returncode == 0, run.stderr[-2000:]  # the evaluator lived to report
        report = json.loads(run.stdout.strip().splitlines()[-1])
        if userns.returncode == 0 and shutil.which("bwrap"):
            assert report["mode"] == "bwrap", report["why"]
        if report["mode"] == "rlimits":
            pytest.skip(f"no unprivileged isolation here ({report['why']}): rlimits only, which says so loudly")
        assert bystander.poll() is None, "the sandboxed program killed another process of the user"
        assert not (repo / "pwned.txt").exists() and not Path("/tmp/pwned-by-sandbox.txt").exists()
        assert report["verdicts"]["write_repository"][0] != "passed"
    finally:
        bystander.kill()
        bystander.wait()
        Path("/tmp/pwned-by-sandbox.txt").unlink(missing_ok=True)
        shutil.rmtree(tmp_path, ignore_errors=True)
