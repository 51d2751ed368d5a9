"""kill -9 of a whole flow run in the middle of a training stage, then the same command again.

The rerun resumes that stage from its last checkpoint (optimizer, scheduler, RNG and data position
in ``adapters/.partial-<key>/checkpoint``), reads the finished boxes as ``Cached`` without
rebuilding them, and ends with the bitwise same adapters and merged model as an uninterrupted run.
The kill takes the process group: the flow and the temporary Prefect server it started.

Three flow processes (a reference run and the victim side by side, then the rerun); each pays
Prefect's start (imports and a temporary server): 1.5-3 minutes on a 2-core machine. It stays in the
default run: resuming after a kill is a promise of the pipeline. The fast test below kills at the
worst instants by hand: between the two renames that swap a checkpoint in, with the next checkpoint
half-written and a loss-log line torn.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import psutil
import pytest
import torch

from conftest import builds, kill_group, logged_task_states, start_flow
from promptintern.artifacts import is_complete

STEPS_PER_STAGE = 18  # 24 rows / batch 4 x 3 epochs; a checkpoint every 2 steps


def _argv(data_dir: Path, root: Path) -> list[str]:
    return ["--preset", "tiny", "--set", f"data_dir={data_dir}", "--artifact-root", str(root),
            "--set", "train.epochs_per_stage=3", "--set", "train.checkpoint_every=2",
            "--set", "eval.baseline_full_prompt=false", "--set", "eval.baseline_direct=false",
            "--set", "eval.baseline_query_only=false", "--set", "eval.test_subset=2"]


def _final_folders(root: Path, kind: str) -> list[Path]:
    return sorted(p for p in (root / kind).glob("*") if p.is_dir() and not p.name.startswith("."))


def _stage_checkpoint(root: Path) -> Path | None:
    """Stage 2's partial folder once it holds a checkpoint (of step 4 or later) and one more step
    is logged past it: the rerun must then also drop that step's log line and redo it."""
    if len(_final_folders(root, "adapters")) != 1:
        return None
    for partial in (root / "adapters").glob(".partial-*/"):
        whole = any((partial / name / "state.pt").is_file() for name in ("checkpoint", "checkpoint.old"))
        logged = (partial / "log.jsonl").read_text().count("\n") if (partial / "log.jsonl").is_file() else 0
        if whole and logged >= 5 and logged % 2 == 1:
            return partial
    return None


def _is_free(lock_file: Path) -> bool:
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _weights(folder: Path) -> dict[str, str]:
    """sha256 of every weights file (and the loss log) of an artifact folder, from its manifest."""
    files = json.loads((folder / "manifest.json").read_text())["files"]
    return {rel: meta["sha256"] for rel, meta in files.items() if rel.endswith(".safetensors") or rel == "log.jsonl"}


def test_a_kill_mid_checkpoint_swap_resumes_from_the_previous_checkpoint(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from promptintern.config import LoraSettings, TrainSettings
    from promptintern.datasets import Example
    from promptintern.datasets import get_task
    from promptintern.models import load_tokenizer
    from promptintern.schedule import StageSpec
    from promptintern.shards import write_shard
    from promptintern.train import train_stage

    rows = [Example(id=str(i), query=f"show file {i}", target=f"cat f{i}.txt") for i in range(8)]
    shard = tmp_path / "shard.parquet"
    write_shard(shard, rows, rows, None, StageSpec(stage=1, tau=1.0, k=0), "Translate to bash.", get_task("nl2bash").format,
                load_tokenizer(tiny_model_dir))
    cfg = TrainSettings(epochs_per_stage=2, batch_size=2, lr=1e-3, checkpoint_every=2)
    lora = LoraSettings(r=4, alpha=8, dropout=0.1)
    full = train_stage(tiny_model_dir, shard, tmp_path / "full", lora, cfg, stage=1)

    def crash_after_five(step, total, loss):
        if step == 5:
            raise KeyboardInterrupt("simulated kill")

    work = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train_stage(tiny_model_dir, shard, work, lora, cfg, stage=1, on_step=crash_after_five)
    # the state a kill leaves between "checkpoint -> checkpoint.old" and "checkpoint.tmp -> checkpoint"
    (work / "checkpoint").rename(work / "checkpoint.old")
    (work / "checkpoint.tmp" / "adapter").mkdir(parents=True)  # the next one, state.pt not yet written
    with (work / "log.jsonl").open("a") as fh:
        fh.write('{"step": 6, "lo')  # torn mid-line

    resumed = train_stage(tiny_model_dir, shard, work, lora, cfg, stage=1)
    assert resumed.resumed_from_step == 4
    assert [json.loads(l)["loss"] for l in (work / "log.jsonl").read_text().splitlines()] == [
        json.loads(l)["loss"] for l in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert (resumed.tokens, resumed.target_tokens) == (full.tokens, full.target_tokens)  # whole-stage counts
    assert not any(work.glob("checkpoint*"))
    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(work / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_killed_flow_resumes_the_stage_and_ends_bitwise_equal(tiny_data_dir, tmp_path):
    ref_root, root = tmp_path / "reference", tmp_path / "resumed"
    home = tmp_path / "home"  # the victim and its rerun share it: its locks, its database
    ref = start_flow(_argv(tiny_data_dir, ref_root), tmp_path / "ref-home", tmp_path / "ref.log",
                     BUILD_LOG=str(tmp_path / "ref-builds"))
    victim = start_flow(_argv(tiny_data_dir, root), home, tmp_path / "victim.log",
                        BUILD_LOG=str(tmp_path / "victim-builds"))
    try:
        deadline = time.monotonic() + 600
        while (partial := _stage_checkpoint(root)) is None:
            assert victim.poll() is None, (tmp_path / "victim.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "stage 2 never wrote a checkpoint"
            time.sleep(0.02)
        group = [p for p in psutil.process_iter() if _pgid(p.pid) == victim.pid]
        assert any("uvicorn" in " ".join(p.cmdline()) for p in group)  # the temporary server
        kill_group(victim)
        assert _group_gone(victim.pid)
    finally:
        kill_group(victim)

    # After the kill: the stage was mid-way, its checkpoint is there, nothing half-built is final
    # and no lock is held by the dead.
    assert len(_final_folders(root, "adapters")) == 1 and (root / "adapters").joinpath(partial.name).is_dir()
    for kind in (p.name for p in root.iterdir() if p.is_dir()):
        assert all(is_complete(folder) for folder in _final_folders(root, kind)), kind
    locks = list(root.glob("*/.partial-*.lock")) + list((home / "locks").glob("*.lock"))
    assert (root / "adapters" / f"{partial.name}.lock") in locks
    assert locks and all(_is_free(lock) for lock in locks)
    before = builds(tmp_path / "victim-builds")

    started = time.monotonic()
    rerun = start_flow(_argv(tiny_data_dir, root), home, tmp_path / "rerun.log", BUILD_LOG=str(tmp_path / "rerun-builds"))
    try:
        assert rerun.wait(600) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        assert ref.wait(600) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    finally:
        kill_group(rerun)
        kill_group(ref)
    print(f"rerun after the kill: {time.monotonic() - started:.0f} s")

    # The rerun rebuilt only the interrupted stage and what follows it; the rest was Cached.
    rebuilt = builds(tmp_path / "rerun-builds")
    assert rebuilt[0] == before[-1] == f"adapters/{partial.name.removeprefix('.partial-')}"
    assert [b.split("/")[0] for b in rebuilt] == ["adapters", "adapters", "merged", "serving", "evals"]
    states = logged_task_states(tmp_path / "rerun.log")
    assert sorted(states["train-stage"]) == ["Cached", "Completed", "Completed"]
    for name in ("prepare-model", "load-dataset", "compress-template", "build-retrieval-bank", "materialize-shard"):
        assert set(states[name]) == {"Cached"}, (name, states[name])

    # It resumed: stage 2 started from a checkpoint, and its loss log has every step exactly once.
    stage2 = root / rebuilt[0]
    stats = json.loads((stage2 / "stats.json").read_text())
    assert 4 <= stats["resumed_from_step"] < STEPS_PER_STAGE
    assert [json.loads(l)["step"] for l in (stage2 / "log.jsonl").read_text().splitlines()] == list(
        range(1, STEPS_PER_STAGE + 1))
    assert not any(stage2.glob("checkpoint*"))

    # Same keys, same bits: every stage's adapter and loss log, and the merged model.
    for kind in ("adapters", "merged"):
        ours, theirs = _final_folders(root, kind), _final_folders(ref_root, kind)
        assert [p.name for p in ours] == [p.name for p in theirs]
        for a, b in zip(ours, theirs):
            assert _weights(a) and _weights(a) == _weights(b), a.name
    assert not list(root.glob("*/.partial-*/"))


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """No live (non-zombie) process is left in the process group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in psutil.process_iter(["status"])
                 if _pgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.1)
    return False
