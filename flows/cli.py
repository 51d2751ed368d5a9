"""What a command-line run prints when it fails: the one message, and where the rest is.

A bad input met inside a flow used to print 60-180 lines: Prefect logs the exception with its
traceback where the task fails, again where the flow fails, and again as the flow's final state,
then Python prints it once more. For a person at a terminal, ``run_cli`` keeps the console to the
line that says which box failed and one closing ``error: <message>``; every record, tracebacks
included, goes to a log file under ``$PREFECT_HOME/logs/`` whose path the closing line gives.
``--debug`` restores everything on the console (and Python's own traceback).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

# What a user can fix (a bad key, file, row, model path; an unavailable variant; a resource limit):
# one message. Anything else is a bug: its traceback is printed.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)
FAILURES = "promptintern.cli"


class _NoTraceback(logging.Formatter):
    """The console handler's own formatter, minus exception tracebacks."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _not_the_flows_failure(record: logging.LogRecord) -> bool:
    """The flow's own failure lines repeat the task's message: the closing line says it once."""
    message = record.getMessage()
    return not (message.startswith("Encountered exception during execution")
                or (message.startswith("Finished in state Failed") and "Flow run" in message)
                or (message.startswith("Finished in state Failed") and "flow_run" in record.name))


@contextmanager
def quiet_console(program: str) -> Iterator[Path]:
    """Within the block: tracebacks and the flow's repeated failure lines off Prefect's console
    handler; every record to a log file. Everything is put back after."""
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler
    from prefect.settings import get_current_settings

    setup_logging()
    root = logging.getLogger()
    consoles = [(h, h.formatter) for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
    for handler, formatter in consoles:
        handler.setFormatter(_NoTraceback(formatter))
        handler.addFilter(_not_the_flows_failure)
    logs = Path(get_current_settings().home).expanduser() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = (logs / f"{program}-{time.strftime('%Y%m%dT%H%M%S')}.log").resolve()
    file_handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    file_handler.setLevel(logging.DEBUG)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(file_handler)
    failures = logging.getLogger(FAILURES)  # the closing traceback: to the file, not the console
    failures.addHandler(file_handler)
    failures.propagate = False
    try:
        yield path
    finally:
        for handler, formatter in consoles:
            handler.setFormatter(formatter)
            handler.removeFilter(_not_the_flows_failure)
        root.removeHandler(file_handler)
        failures.removeHandler(file_handler)
        file_handler.close()


def run_cli(body: Callable[[], int], program: str, debug: bool) -> int:
    """Run a command's ``body``; a user error ends it with one message and exit status 2. Nothing
    the command starts outlives it (``guard_children``)."""
    guard_children()
    if debug:
        return body()
    with quiet_console(program) as log:
        try:
            return body()
        except USER_ERRORS as exc:
            logging.getLogger(FAILURES).error("%s failed", program, exc_info=exc)
            print(f"error: {exc}", file=sys.stderr)
            print(f"(the full log: {log}; --debug shows the traceback here)", file=sys.stderr)
            return 2


# ---------------------------------------------------------------------------------------------
# nothing a run starts outlives it
# ---------------------------------------------------------------------------------------------

# The guard: a small process that records the children of the run's process while it lives and,
# when that process dies however it dies (PR_SET_PDEATHSIG delivers SIGTERM to the guard), ends
# every recorded child still alive: SIGTERM, then SIGKILL after 3 s. A child is recorded with its
# start time, so a pid the system has reused since is never hit.
GUARD = r"""
import os, signal, sys, time
main = int(sys.argv[1])
seen = {}
def stat(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[1]), fields[19]  # ppid, start time
def scan():
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                ppid, start = stat(int(name))
            except (OSError, IndexError, ValueError):
                continue
            if ppid == main or ppid in seen:
                seen[int(name)] = start
def alive(pid):
    try:
        return stat(pid)[1] == seen[pid]
    except (OSError, IndexError, ValueError):
        return False
done = []
signal.signal(signal.SIGTERM, lambda *_: done.append(1))
while not done and os.getppid() == main:
    scan()
    time.sleep(0.2)
for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
    left = [pid for pid in seen if alive(pid)]
    for pid in left:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.time() + wait
    while left and time.time() < deadline:
        time.sleep(0.1)
        left = [pid for pid in left if alive(pid)]
"""


_GUARD: subprocess.Popen | None = None


def guard_children() -> subprocess.Popen | None:
    """Start the guard for this process (Linux; elsewhere None): after a ``kill -9`` of a command,
    Prefect's temporary server (uvicorn, ~200 MB, listening) and any other child would otherwise
    live on for good."""
    global _GUARD
    if not sys.platform.startswith("linux") or not Path("/proc/self/stat").exists():
        return None
    if _GUARD is not None and _GUARD.poll() is None:  # one guard per process is enough
        return _GUARD
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)

    def die_with_parent() -> None:  # runs in the guard between fork and exec
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    _GUARD = subprocess.Popen([sys.executable, "-c", GUARD, str(os.getpid())], preexec_fn=die_with_parent,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _GUARD
