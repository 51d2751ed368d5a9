"""Run untrusted Python (model-generated code) in a sandbox, without Docker.

    from promptintern.sandbox import Sandbox
    with Sandbox(mode="auto", workers=2, timeout_s=10) as sb:
        verdicts = sb.run_many(["print(1)", "while True: pass"])

The sandbox judges only the *process* (``passed`` = exited 0 in time). Whether a program passed its
tests is decided by ``promptintern.evaluate.execution``, which never trusts the program's word.

Every mode: a fresh temp dir per run, a clean environment, stdin ``/dev/null``, stdout/stderr into
files capped by RLIMIT_FSIZE and read back truncated, rlimits (CPU seconds, RLIMIT_DATA for memory:
RLIMIT_AS would also cap thread stacks; processes; file size; open files; no core files), a wall-clock
timeout, and afterwards SIGKILL to the run's process group and to every process left of its uid.

Modes (``mode="auto"`` picks the first that works here: bwrap if it runs, namespaces if root, else
rlimits; which one and why is logged, and a run in rlimits mode says so in its report):

``bwrap``  (bubblewrap installed: ``scripts/setup_sandbox.sh``; root, or a normal user where the
kernel allows unprivileged user namespaces, as most distributions do)
    As root, bwrap is launched *as* the worker uid (60000 + slot; its rlimits then count, unlike for
    uid 0); as a normal user, as you, inside an unprivileged user namespace. Either way in new
    user/pid/net/ipc/uts/cgroup namespaces. The filesystem is ``/usr`` read-only, the program file,
    a fresh /proc and /dev, a size-capped tmpfs /tmp (the cwd) and /dev/shm; the root is read-only and
    nothing else of the host (no /etc, /home, /root, /var, no repository) is visible. Network: only
    a private loopback. No nested user namespaces. The program cannot see or signal host processes,
    the evaluating process included. Without root, parallel runs share your uid but not a pid, mount
    or network namespace: they cannot see, signal or write into each other.
``namespaces``  (root; the measured recipe of DESIGN.md)
    ``prlimit`` + ``unshare --net --pid --fork --kill-child --mount-proc --ipc --uts --mount`` +
    ``setpriv`` to the worker uid with no capabilities and no_new_privs. In the private mount namespace
    every world-writable directory (/tmp, /var/tmp, /dev/shm, /run/lock) is covered by a small fresh
    tmpfs, /tmp being the cwd, so files and disk filling stay inside the run. The rest of the host
    filesystem is visible, with exactly the rights of an unprivileged stranger (uid 60000+slot):
    world-readable files can be read. No network (no interface is up), host processes invisible.
``rlimits``  (the fallback where neither works; no isolation beyond rlimits and a process group)
    Run as root it still drops to the worker uid, so it keeps uid separation: /etc/shadow, root's
    files and processes (PID 1 included) and their environment stay out of reach. It does NOT
    protect the network (127.0.0.1 services included), world-writable directories such as /tmp
    (cleanup removes what the worker uid left at their top level) or the disk (RLIMIT_FSIZE caps
    each file, not their number).
    Run as a normal user it protects even less: the program runs *as you*. It can read, change and
    delete anything you can (your $HOME, your SSH keys, this repository), read your other
    processes' environment and signal or kill them, and a daemon that calls setsid() and scrubs
    its environment can outlive the run (cleanup kills the process group and every process of
    yours that carries the run's marker in its environment). RLIMIT_NPROC counts all your
    processes, and the zombies of a program's killed children until the host's init reaps them (as
    root the sandbox waits for that; as you it cannot tell them apart, so a run right after a
    forking one may be refused fork() for a few seconds). Parallel runs share your uid, so one
    program can signal, trace or write into another. Use it only for code you would run yourself.

Pitfalls it avoids (DESIGN.md): RLIMIT_NPROC is ignored for uid 0, hence the uid drop; the pyenv
python under /root is unreadable to another uid, hence ``/usr/bin/python3 -I``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

log = logging.getLogger(__name__)

MODES = ("bwrap", "namespaces", "rlimits")
STATUSES = ("passed", "failed", "timeout", "blocked", "error")
BASE_UID = 60000
RLIMITS_WARNING = ("NO ISOLATION: generated programs run as you, with resource limits only (neither bwrap nor "
                   "unprivileged user namespaces work here); they can read, change and delete your files and "
                   "signal your processes. Install bubblewrap (scripts/setup_sandbox.sh) or enable user "
                   "namespaces (sysctl kernel.unprivileged_userns_clone=1)")
MAX_SLOTS = 64  # uids 60000..60063; slots are taken with a lock file, so processes can share them
LOCK_DIR = Path("/run/promptintern-sandbox")
LAUNCH_ERROR = 125  # exit status of our own launcher when it could not set the sandbox up
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/shm", "/run/lock", "/var/lock")
MARKER_ENV = "PROMPTINTERN_SANDBOX_RUN"
# The last stderr line of a program stopped by a limit or a denied operation.
_BLOCKED = re.compile(
    r"^(MemoryError|PermissionError|BlockingIOError|ConnectionRefusedError|"
    r"OSError: \[Errno (1|11|13|24|27|28|30|101|122)\])"
)

# namespaces mode: root inside the new mount namespace covers the world-writable dirs with tmpfs,
# then runs the program as the worker uid. The shell stays PID 1 (root, so the program cannot
# signal it) and the program is a normal process. $1 program, $2 /tmp size, $3 small size,
# $4 space-separated dirs to cover; the rest is the command.
_NS_LAUNCHER = r"""
exec 3<"$1" || { echo "sandbox launcher: cannot open program" >&2; exit 125; }
for d in $4; do
  mount -t tmpfs -o "size=$3,mode=1777,nosuid,nodev" tmpfs "$d" || { echo "sandbox launcher: mount $d" >&2; exit 125; }
done
mount -t tmpfs -o "size=$2,mode=1777,nosuid,nodev" tmpfs /tmp || { echo "sandbox launcher: mount /tmp" >&2; exit 125; }
cd /tmp || exit 125
shift 4
"$@"
exit $?
"""


@dataclass
class Verdict:
    """What happened to one run. ``stdout``/``stderr`` are the tails of the capped output files."""

    status: str  # one of STATUSES
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    detail: str = ""  # why this status, in words
    mode: str = ""
    stdout_truncated: bool = False
    uid: int | None = None  # the uid the program ran as

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def is_root() -> bool:
    return os.geteuid() == 0


def default_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3") or "python3"


@lru_cache(maxsize=None)
def mode_available(mode: str, python: str | None = None) -> tuple[bool, str]:
    """Whether ``mode`` works on this machine, by running ``pass`` in it (cached per process)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES} or 'auto'")
    if mode == "namespaces" and not is_root():
        return False, ("namespaces needs root: run as you, the host filesystem would stay writable with your "
                       "rights (bwrap, which shows the program only /usr, works without root where the kernel "
                       "allows unprivileged user namespaces)")
    needed = {"bwrap": ("prlimit", "unshare", "bwrap") + (("setpriv",) if is_root() else ()),
              "namespaces": ("prlimit", "unshare", "setpriv", "mount"),
              "rlimits": ("prlimit",) + (("setpriv",) if is_root() else ())}[mode]
    missing = [tool for tool in needed if not shutil.which(tool)]
    if missing:
        hint = " (run scripts/setup_sandbox.sh)" if "bwrap" in missing else ""
        return False, f"{mode}: {', '.join(missing)} not found{hint}"
    try:
        with Sandbox(mode=mode, workers=1, timeout_s=20, python=python, _probe=True) as sb:
            verdict = sb.run("import sys; print('ok')")
    except OSError as err:
        return False, f"{mode}: {err}"
    if verdict.status == "passed" and verdict.stdout.strip() == "ok":
        return True, f"{mode}: works"
    return False, f"{mode}: probe run ended {verdict.status} (rc {verdict.returncode}): {verdict.stderr.strip()[-300:]}"


def available_modes(python: str | None = None) -> dict[str, tuple[bool, str]]:
    return {mode: mode_available(mode, python) for mode in MODES}


def pick_mode(python: str | None = None) -> tuple[str, str]:
    """The strongest mode that works here, and why."""
    reasons = []
    for mode in MODES:
        ok, why = mode_available(mode, python)
        if ok:
            return mode, "; ".join(reasons + [why])
        reasons.append(why)
    raise RuntimeError("no sandbox mode works here: " + "; ".join(reasons))


class _Slots:
    """Worker uids 60000+slot, each held through an flock so concurrent processes never share one."""

    def __init__(self) -> None:
        LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        st = LOCK_DIR.lstat()
        if not LOCK_DIR.is_dir() or LOCK_DIR.is_symlink() or st.st_uid != 0:
            raise OSError(f"{LOCK_DIR} must be a directory owned by root")
        # Cleanup kills every process of a worker uid: never use one that belongs to an account.
        self.uids = [uid for uid in range(BASE_UID, BASE_UID + MAX_SLOTS) if not _is_account(uid)]
        if not self.uids:
            raise OSError(f"every uid in {BASE_UID}..{BASE_UID + MAX_SLOTS - 1} belongs to an account")

    def acquire(self) -> tuple[int, int]:
        while True:
            for uid in self.uids:
                fd = os.open(LOCK_DIR / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return uid, fd
                except BlockingIOError:
                    os.close(fd)
            time.sleep(0.05)

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # closing the only descriptor drops the flock


def _is_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def _proc_uids(pid: str) -> tuple[set[int], bytes] | None:
    """(real, effective, saved, fs uids; state letter) of a process, from /proc/PID/status."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
        try:
            text = os.read(fd, 4096)
        finally:
            os.close(fd)
        state = text[text.index(b"\nState:") + 8:].split(None, 1)[0]
        uid_line = text[text.index(b"\nUid:") + 5:].split(b"\n", 1)[0]
    except (OSError, ValueError, IndexError):
        return None
    return {int(x) for x in uid_line.split()}, state


def live_pids(uid: int, zombies: bool = False) -> list[int]:
    """Processes with ``uid`` as real, effective, saved or filesystem uid (zombies only if asked)."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            info = _proc_uids(pid)
            if info and uid in info[0] and (zombies or info[1] != b"Z"):
                pids.append(int(pid))
    return pids


def kill_uid(uid: int, passes: int = 50) -> int:
    """SIGKILL every live process of ``uid``; repeat until none is left (a fork bomb races us)."""
    killed = 0
    for _ in range(passes):
        pids = live_pids(uid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed += len(pids)
        if not pids:
            break
        time.sleep(0.002)
    return killed


def kill_marked(marker: bytes) -> int:
    """Non-root cleanup: SIGKILL our processes whose environment carries this run's marker."""
    killed, me = 0, os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes():
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
        except OSError:
            pass
    return killed


def _read_tail(fh, limit: int) -> tuple[str, bool, int]:
    fh.flush()
    size = os.fstat(fh.fileno()).st_size
    fh.seek(max(0, size - limit))
    return fh.read().decode("utf-8", "replace"), size > limit, size


class Sandbox:
    """Runs programs under one isolation mode, ``workers`` at a time, each under its own uid.

    timeout_s: the CPU-seconds limit per run (rounded up): what judges a slow program, the same on
    an idle and on a loaded machine. wall_factor: the wall-clock guard is ``wall_factor`` times as
    long, against programs that sleep or block (a gold MBPP solution took 3-6 of its 10 s of wall
    time under load; with one limit for both, the machine's load decided its verdict).
    memory_mb: RLIMIT_DATA. disk_mb: size of the tmpfs /tmp (bwrap, namespaces). output_kb: largest
    file the program may write, stdout/stderr included (RLIMIT_FSIZE). tail_kb: how much of stdout
    is read back. nproc: RLIMIT_NPROC (per worker uid). python: interpreter run as ``python -I``.
    """

    def __init__(self, mode: str = "auto", workers: int = 2, timeout_s: float = 10.0, memory_mb: int = 1024,
                 disk_mb: int = 64, output_kb: int = 16 * 1024, tail_kb: int = 256, nproc: int = 64,
                 nofile: int = 64, python: str | None = None, base_dir: str | Path | None = None,
                 _probe: bool = False, wall_factor: float = 3.0) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: must be >= 1")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s}: must be > 0")
        if wall_factor < 1:
            raise ValueError(f"wall_factor={wall_factor}: the wall-clock guard must be at least the CPU limit")
        self.wall_s = timeout_s * wall_factor
        self.python = python or default_python()
        if mode == "auto":
            mode, why = pick_mode(python)
            log.info("sandbox mode: %s (%s)", mode, why)
        elif mode not in MODES:
            raise ValueError(f"mode={mode!r}: choose one of {MODES} or 'auto'")
        elif not _probe:
            ok, why = mode_available(mode, python)
            if not ok:
                raise RuntimeError(f"sandbox mode {mode!r} is not available here: {why}")
        self.mode, self.workers, self.timeout_s = mode, workers, timeout_s
        self.memory_mb, self.disk_mb, self.output_kb, self.tail_kb = memory_mb, disk_mb, output_kb, tail_kb
        self.nproc, self.nofile = nproc, nofile
        self.reap_wait_s = 5.0
        self.drop_uid = is_root()
        if mode == "rlimits" and not self.drop_uid and not _probe:
            log.warning("sandbox: %s", RLIMITS_WARNING)
        self._slots = _Slots() if self.drop_uid else None
        if not self.drop_uid:  # RLIMIT_NPROC counts all of the user's processes
            self.nproc = nproc + sum(1 for p in os.listdir("/proc") if p.isdigit() and _owned_by_me(p))
        self._base = Path(tempfile.mkdtemp(prefix="promptintern-sandbox-", dir=base_dir))
        self._base.chmod(0o711)  # the worker uids may traverse, not list
        self._remove_base = weakref.finalize(self, shutil.rmtree, self._base, ignore_errors=True)
        self._counter = 0
        self._lock = threading.Lock()
        self._covered = sorted({os.path.realpath(d) for d in WORLD_WRITABLE
                                if os.path.isdir(d) and os.stat(d).st_mode & 0o002} - {"/tmp"})

    # -- public -------------------------------------------------------------------------------
    def run(self, program: str, setup: str = "", *, uid: int | None = None) -> Verdict:
        """Run ``setup`` then ``program`` (one Python source file) and report on the process.
        ``uid``: a worker uid the caller holds (``worker_uid()``); by default one is taken per run."""
        source = f"{setup}\n{program}" if setup else program
        if uid is not None:
            return self._run(source, uid)
        with self.worker_uid() as held:
            return self._run(source, held)

    @contextmanager
    def worker_uid(self) -> Iterator[int]:
        """Hold a worker uid (60000 + the first free slot, locked across processes); as a non-root
        user, your own uid. Holding it past a run lets a caller check what the run left behind."""
        if not self._slots:
            yield os.getuid()
            return
        uid, fd = self._slots.acquire()
        try:
            yield uid
        finally:
            _Slots.release(fd)

    def run_many(self, programs: Sequence[str | tuple[str, str]]) -> list[Verdict]:
        """Run programs (or (program, setup) pairs) ``workers`` at a time; results in input order."""
        def one(item):
            return self.run(*item) if isinstance(item, tuple) else self.run(item)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(one, programs))

    def close(self) -> None:
        self._remove_base()  # also runs when the Sandbox is garbage-collected or at exit

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one run ------------------------------------------------------------------------------
    def _command(self, prog: Path, uid: int) -> list[str]:
        cpu = max(1, int(-(-self.timeout_s // 1)))
        cmd = ["prlimit", f"--cpu={cpu}:{cpu + 1}", f"--data={self.memory_mb << 20}", f"--nproc={self.nproc}",
               f"--fsize={self.output_kb << 10}", f"--nofile={self.nofile}", "--core=0", "--"]
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all"] if self.drop_uid else []
        if self.mode == "rlimits":
            return cmd + drop + [self.python, "-I", str(prog)]
        if self.mode == "namespaces":
            return cmd + ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--uts",
                          "--mount", "--", "/bin/sh", "-c", _NS_LAUNCHER, "sh", str(prog), f"{self.disk_mb}m",
                          "1m", " ".join(self._covered)] + drop + [self.python, "-I", "/dev/fd/3"]
        # bwrap's own PID-1 process outlives the bwrap we wait for and would linger as a zombie of
        # the worker uid (counted by RLIMIT_NPROC) until the host's init reaps it; a pid namespace
        # around bwrap reaps everything in it when bwrap exits. Root makes it directly; a normal user
        # makes it inside an unprivileged user namespace (the kernel permitting: pick_mode probes).
        outer = ["unshare"] + ([] if self.drop_uid else ["--user", "--map-root-user"]) + ["--pid", "--fork", "--kill-child", "--"]
        return cmd + outer + drop + ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                             "--new-session", *_bwrap_root(), "--proc", "/proc", "--dev", "/dev",
                             "--size", str(1 << 20), "--tmpfs", "/dev/shm",
                             "--size", str(self.disk_mb << 20), "--tmpfs", "/tmp",
                             "--ro-bind", str(prog), "/prog.py", "--remount-ro", "/", "--chdir", "/tmp",
                             self.python, "-I", "/prog.py"]

    def _run(self, source: str, uid: int) -> Verdict:
        with self._lock:
            self._counter += 1
            run_dir = self._base / f"run-{self._counter}"
        run_dir.mkdir(mode=0o711)
        work = run_dir / "work"  # the cwd in rlimits mode (bwrap, namespaces: the tmpfs /tmp)
        work.mkdir(mode=0o700)
        if self.drop_uid:
            os.chown(work, uid, uid)
        prog = run_dir / "prog.py"
        prog.write_text(source, encoding="utf-8", errors="replace")
        prog.chmod(0o644)
        marker = secrets.token_hex(8)
        if self.drop_uid:  # we hold the uid: anything still running as it is stale (a holder that died)
            kill_uid(uid)
        home = str(work) if self.mode == "rlimits" else "/tmp"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home, MARKER_ENV: marker}
        try:
            with open(run_dir / "stdout", "w+b") as out, open(run_dir / "stderr", "w+b") as err:
                try:
                    rc, timed_out, wall = self._spawn(self._command(prog, uid), out, err, env, work)
                except OSError as exc:  # a launcher tool vanished, no processes left, ...
                    return Verdict(status="error", returncode=None, detail=f"could not start: {exc}",
                                   mode=self.mode, uid=uid)
                finally:
                    self._cleanup_processes(uid, marker)
                stdout, truncated, out_size = _read_tail(out, self.tail_kb << 10)
                stderr, _, err_size = _read_tail(err, 8 << 10)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            if self.mode == "rlimits" and self.drop_uid:
                _remove_owned_by(uid, self._covered + ["/tmp"])
        status, detail = self._classify(rc, timed_out, wall, stderr, max(out_size, err_size))
        return Verdict(status=status, returncode=rc, stdout=stdout, stderr=stderr, wall_s=round(wall, 4),
                       detail=detail, mode=self.mode, stdout_truncated=truncated, uid=uid)

    def _spawn(self, cmd, out, err, env, cwd) -> tuple[int, bool, float]:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd,
                                start_new_session=True, close_fds=True)
        # Wait on a pidfd, so the group leader stays unreaped until its group has been killed: the
        # process group id cannot be reused by an unrelated process meanwhile.
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): the small reuse race remains
            pidfd = None
        if pidfd is None:
            try:
                proc.wait(timeout=self.wall_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
        else:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                timed_out = not poller.poll(self.wall_s * 1000)
            finally:
                os.close(pidfd)
        wall = time.monotonic() - t0
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return proc.wait(), timed_out, wall

    def _cleanup_processes(self, uid: int, marker: str) -> None:
        if self.drop_uid:
            kill_uid(uid)
            # Killed orphans are reaped by whoever inherits them: the host's init without a pid
            # namespace (which may take seconds here), else the namespace's init as it exits, which
            # under load can also lag the run's end. Until reaped they count against the uid's
            # RLIMIT_NPROC and the next run under this uid could not fork, so every mode waits for
            # them (a run that left nothing behind pays one /proc scan).
            deadline = time.monotonic() + self.reap_wait_s
            while live_pids(uid, zombies=True) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            kill_marked(f"{MARKER_ENV}={marker}".encode())

    def _classify(self, rc: int, timed_out: bool, wall: float, stderr: str, out_size: int) -> tuple[str, str]:
        cpu_limit = max(1, int(-(-self.timeout_s // 1)))
        # bwrap and our namespaces launcher report a program killed by signal N as exit status 128+N
        sig = -rc if rc < 0 else (rc - 128 if self.mode != "rlimits" and 128 < rc < 160 else 0)
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and not timed_out and wall >= cpu_limit * 0.9):
            return "timeout", f"CPU limit ({cpu_limit} s of CPU time) reached"
        if timed_out:
            return "timeout", f"wall-clock guard ({self.wall_s:g} s) reached: the program slept or blocked"
        if (rc == LAUNCH_ERROR and "sandbox launcher:" in stderr) or (self.mode == "bwrap" and rc == 1
                                                                     and stderr.startswith("bwrap: ")):
            return "error", last
        if rc == 0:
            return "passed", "exited 0"
        if sig == signal.SIGXFSZ or out_size >= self.output_kb << 10:
            return "blocked", f"output limit ({self.output_kb} KiB) reached"
        if sig:
            return "blocked", f"killed by {signal.Signals(sig).name}"
        if _BLOCKED.match(last):
            return "blocked", last[:200]
        return "failed", last[:200] or f"exit status {rc}"


def _owned_by_me(pid: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == os.getuid()
    except OSError:
        return False


@lru_cache(maxsize=1)
def _bwrap_root() -> tuple[str, ...]:
    """/usr read-only plus the host's /bin, /lib* and /sbin (symlinks into /usr on merged-/usr systems)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return tuple(args)


def _remove_owned_by(uid: int, dirs: Sequence[str]) -> None:
    """rlimits mode as root: remove what the worker uid left at the top of world-writable dirs."""
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass
