"""Two runs at once on one artifact root: every shared folder is built once, none is corrupted.

Two guards, tested separately. ``tasks.caching.materialize`` holds a flock per folder inside the
artifact root, so two builders of one key never share its ``.partial-<key>`` folder, with or
without Prefect (the first two tests: a few seconds). Prefect's SERIALIZABLE lock
(``tasks.locking``) makes the second of two flow runs that share a lock directory wait and read the
folder as ``Cached`` (the last test: two whole flow processes side by side, same preset, a
different late parameter; 60-80 s on 2 cores, most of it Prefect's start).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import REPO_ROOT, builds, kill_group, logged_task_states, start_flow
from promptintern.artifacts import is_complete, read_manifest
from tasks.caching import materialize

# Build one folder with a slow builder that logs who built it; print the folder.
BUILDER = """
import os, sys, time
from pathlib import Path
from tasks.caching import materialize
root, log = sys.argv[1], Path(sys.argv[2])
def build(out):
    with log.open("a") as fh:
        fh.write(f"{os.getpid()}\\n")
    (out / "half.txt").write_text("first half")
    time.sleep(1.5)  # a second builder in the same .partial folder now would clobber or be clobbered
    (out / "half.txt").write_text("first half, second half")
print(materialize("things", ("promptintern.artifacts",), {"root": root, "x": 1}, build), flush=True)
"""


def test_two_processes_without_prefect_build_a_folder_once(tmp_path):
    log = tmp_path / "builders.log"
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path / "root"), str(log)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert len(set(outs)) == 1 and outs[0].startswith("things/")
    assert len(log.read_text().splitlines()) == 1  # one builder; the others waited, then found it
    folder = tmp_path / "root" / outs[0]
    assert is_complete(folder) and (folder / "half.txt").read_text() == "first half, second half"
    assert not list((tmp_path / "root" / "things").glob(".partial-*/"))


def test_threads_of_one_process_build_a_folder_once(tmp_path):
    built, results = [], []

    def build(out):
        built.append(threading.get_ident())
        time.sleep(0.5)
        (out / "value.txt").write_text("42")

    threads = [threading.Thread(target=lambda: results.append(
        materialize("things", ("promptintern.artifacts",), {"root": str(tmp_path), "x": 2}, build)))
        for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(built) == 1 and len(set(results)) == 1 and len(results) == 4
    assert is_complete(tmp_path / results[0])


SHARED_BOXES = ("prepare-model", "load-dataset", "compress-template", "build-retrieval-bank",
                "materialize-shard", "train-stage", "merge-adapter")


def test_two_flow_runs_at_once_share_their_common_boxes(tiny_data_dir, tmp_path):
    """Same preset, one with another eval.max_new_tokens: everything up to the merge is shared."""
    root, locks = tmp_path / "artifacts", tmp_path / "locks"
    argv = ["--preset", "tiny", "--set", f"data_dir={tiny_data_dir}", "--artifact-root", str(root),
            "--set", "eval.baseline_full_prompt=false", "--set", "eval.baseline_direct=false",
            "--set", "eval.baseline_query_only=false", "--set", "eval.test_subset=2"]
    runs = {}
    for name, extra in (("a", []), ("b", ["--set", "eval.max_new_tokens=4"])):
        runs[name] = start_flow(argv + extra, tmp_path / f"home-{name}", tmp_path / f"{name}.log",
                                BUILD_LOG=str(tmp_path / "builds"), PROMPTINTERN_LOCK_DIR=str(locks))
    try:
        for name, proc in runs.items():
            assert proc.wait(600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for proc in runs.values():
            kill_group(proc)

    # Built once: each folder's build started once over both processes, and every folder there
    # is complete, its manifest naming its own key; the two benchmarks are two folders.
    started = builds(tmp_path / "builds")
    assert len(started) == len(set(started)), started
    finals = sorted(f"{kind.name}/{p.name}" for kind in root.iterdir() if kind.is_dir() and kind.name != "runs"
                    for p in kind.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert sorted(started) == finals
    assert sum(f.startswith("evals/") for f in finals) == 2
    for rel in finals:
        assert is_complete(root / rel) and read_manifest(root / rel)["key"] == rel.split("/")[1], rel
    assert not list(root.glob("*/.partial-*/"))

    # Prefect's view: of each shared box, one run computed it and the other read it as Cached.
    a, b = logged_task_states(tmp_path / "a.log"), logged_task_states(tmp_path / "b.log")
    for name in SHARED_BOXES:
        both = sorted(a[name] + b[name])
        assert both == ["Cached"] * len(a[name]) + ["Completed"] * len(a[name]), (name, a[name], b[name])
    assert a["benchmark"] == b["benchmark"] == ["Completed"]
    metrics = [json.loads((root / f / "metrics.json").read_text())["max_new_tokens"] for f in finals
               if f.startswith("evals/")]
    assert sorted(metrics) == [4, 8]
