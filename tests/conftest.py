"""Shared fixtures. Prefect settings are read at import time, so they are set here first."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="promptintern-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from promptintern.models import build_tiny_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO_ROOT = Path(__file__).resolve().parents[1]

# `python -c FLOW_DRIVER ARGS` is `python -m flows.dag ARGS` that also appends "<kind>/<key> <pid>"
# to $BUILD_LOG each time an artifact folder starts being built: what "built once" is counted by.
FLOW_DRIVER = """
import os, sys
from promptintern.artifacts import ArtifactStore
_build = ArtifactStore.build
def build(self, kind, key, inputs):
    with open(os.environ["BUILD_LOG"], "a") as fh:
        fh.write(f"{kind}/{key} {os.getpid()}\\n")
    return _build(self, kind, key, inputs)
ArtifactStore.build = build
from flows.dag import main
sys.exit(main(sys.argv[1:]))
"""


def start_flow(args: list[str], prefect_home: Path, log: Path, **env: str) -> subprocess.Popen:
    """The flow CLI with the driver above, in its own process group (so a kill reaches the
    temporary Prefect server it starts), with its own PREFECT_HOME and this file's offline env."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PROMPTINTERN_LOCK_DIR")}
    return subprocess.Popen([sys.executable, "-c", FLOW_DRIVER, *args], cwd=REPO_ROOT,
                            env={**clean, "PREFECT_HOME": str(prefect_home), **env},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def logged_task_states(log: Path) -> dict[str, list[str]]:
    """Task name -> final state names, read from a flow process's console log."""
    states: dict[str, list[str]] = {}
    for name, state in re.findall(r"Task run '([a-z-]+)-[0-9a-f]+' - Finished in state (\w+)", log.read_text()):
        states.setdefault(name, []).append(state)
    return states


def builds(build_log: Path) -> list[str]:
    """``kind/key`` of every build start recorded by FLOW_DRIVER, in order."""
    return [line.split()[0] for line in build_log.read_text().splitlines()] if build_log.exists() else []

NL2BASH_ROWS = [
    ("list all files in the current directory", "ls -a"),
    ("show the disk usage of the home directory", "du -sh ~"),
    ("count the lines in file.txt", "wc -l file.txt"),
    ("find all python files under src", "find src -name '*.py'"),
    ("print the first ten lines of log.txt", "head -n 10 log.txt"),
    ("delete all empty directories under the current directory", "find . -type d -empty -delete"),
    ("show running processes", "ps aux"),
    ("find all text files and count their lines", "find . -name '*.txt' | xargs wc -l"),
    ("print the last five lines of log.txt", "tail -n 5 log.txt"),
    ("make the script executable", "chmod +x script.sh"),
    ("create the directory a/b/c with parents", "mkdir -p a/b/c"),
    ("search for error in all log files", "grep -r error *.log"),
    ("sort the lines of names.txt and remove duplicates", "sort -u names.txt"),
    ("compress the folder build into build.tar.gz", "tar -czf build.tar.gz build"),
    ("show free disk space in human readable form", "df -h"),
    ("count the files in the current directory", "ls | wc -l"),
]


def write_nl2bash(data_dir: Path, n_train: int = 32, n_test: int = 8) -> Path:
    """A small NL2Bash-layout data dir (real rows' shape, written for the tests)."""
    split_dir = data_dir / "nl2bash" / "split"
    split_dir.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", 4), ("test", n_test)):
        with (split_dir / f"{split}.jsonl").open("w") as fh:
            for i in range(n):
                nl, cmd = NL2BASH_ROWS[(i * 7 + len(split)) % len(NL2BASH_ROWS)]
                fh.write(json.dumps({"id": i, "nl": f"{nl} ({split} {i})", "cmd": cmd}) + "\n")
    return data_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return write_nl2bash(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def prefect_harness():
    """One embedded Prefect API for the session, heartbeats off (1.1 s -> 0.1 s a flow)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
