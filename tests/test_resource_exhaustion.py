"""Disk full and out of memory, injected by monkeypatching: the run fails with a message that says
what ran out, during what and what to change; the store stays consistent (no complete-looking
folder for the failed box, a partial folder only where it holds a checkpoint to resume from); a
rerun after the condition clears succeeds.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from conftest import write_nl2bash
from promptintern import pipeline
from promptintern import train as train_module
from promptintern.artifacts import RESUMABLE_STATE, ArtifactStore, ResourceExhausted, is_complete, resource_errors
from promptintern.config import LoraSettings, TrainSettings
from promptintern.schedule import StageSpec
from test_bad_input import dataset_dir, folders  # noqa: F401  (dataset_dir is a fixture)

KEY = "0123456789abcdef"
ENOSPC = OSError(errno.ENOSPC, "No space left on device")
# pyarrow reports a full disk as an OSError whose errno is only in its text
ARROW_ENOSPC = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")


@pytest.fixture
def shard_dir(dataset_dir, tiny_model_dir, tmp_path) -> Path:
    out = tmp_path / "shard"
    out.mkdir()
    pipeline.shard(dataset_dir, None, None, StageSpec(stage=2, tau=0.0, k=0), tiny_model_dir, out)
    return out


def build(root: Path, kind: str, fn) -> Path:
    store = ArtifactStore(root)
    with store.build(kind, KEY, {}) as work:
        fn(work)
    return store.path(kind, KEY)


# ---------------------------------------------------------------------------------------------
# disk full
# ---------------------------------------------------------------------------------------------


def _failing_write_table(error: OSError):
    def write_table(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")  # what a full disk leaves behind
        raise error

    return write_table


@pytest.mark.parametrize("error", [ENOSPC, ARROW_ENOSPC], ids=["errno", "arrow-text"])
def test_disk_full_while_writing_a_shard(error, dataset_dir, tiny_model_dir, tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    make = lambda out: pipeline.shard(dataset_dir, None, None, StageSpec(stage=2, tau=0.0, k=0), tiny_model_dir, out)
    with monkeypatch.context() as patch:
        patch.setattr(pq, "write_table", _failing_write_table(error))
        with pytest.raises(ResourceExhausted) as err:
            build(root, "shards", make)
    message = str(err.value)
    partial = (root / "shards" / f".partial-{KEY}").resolve()
    assert message.startswith(f"disk full (ENOSPC) while writing the stage 2 shard to {partial}: free space on /")
    assert "MiB free now) and rerun; nothing was published at shards/" + KEY in message
    assert err.value.resource == "disk" and err.value.__cause__ is error
    assert folders(root, "shards") == []  # no final folder, and the half-written partial is gone
    # the condition clears: the rerun builds it
    folder = build(root, "shards", make)
    assert is_complete(folder) and pq.read_table(folder / "shard.parquet").num_rows == 8


def test_disk_full_while_writing_the_manifest(tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    real_write_text = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name == "manifest.json.tmp":
            real_write_text(self, "{\"files\": ")  # torn by the full disk
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", write_text)
        with pytest.raises(ResourceExhausted, match=rf"disk full \(ENOSPC\) while writing the manifest of "
                                                    rf"evals/{KEY} to .*; nothing was published at evals/{KEY}$"):
            build(root, "evals", lambda out: (out / "metrics.json").write_bytes(b"{}"))
    assert folders(root, "evals") == []
    assert is_complete(build(root, "evals", lambda out: (out / "metrics.json").write_bytes(b"{}")))


def test_disk_full_while_writing_the_dataset_rows(tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    data_dir = write_nl2bash(tmp_path / "data", 8, 2)

    def write_examples(path, rows):
        path.write_text("{\"id\":")
        raise OSError(errno.EDQUOT, "Disk quota exceeded", str(path))

    monkeypatch.setattr(pipeline, "write_examples", write_examples)
    with pytest.raises(ResourceExhausted, match=r"disk full \(EDQUOT\) while writing the nl2bash dataset rows"):
        build(root, "datasets", lambda out: pipeline.prepare_dataset("nl2bash", str(data_dir), None, "test", None, 0, out))
    assert folders(root, "datasets") == []


# ---------------------------------------------------------------------------------------------
# out of memory
# ---------------------------------------------------------------------------------------------

LORA = LoraSettings(r=4, alpha=8, dropout=0.0)
CFG = TrainSettings(batch_size=2, max_seq_len=128, checkpoint_every=1)
OOM_ERRORS = {
    "MemoryError": MemoryError(),
    "torch.OutOfMemoryError": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "CPU allocator": RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                  "can't allocate memory: you tried to allocate 8589934592 bytes"),
}


def _oom_at_call(monkeypatch, n: int, error: BaseException) -> None:
    """The n-th training step (1-based) runs out of memory, and every one after it."""
    real, calls = train_module.target_logits, []

    def target_logits(model, batch, **options):
        calls.append(1)
        if len(calls) >= n:
            raise error
        return real(model, batch, **options)

    monkeypatch.setattr(train_module, "target_logits", target_logits)


@pytest.mark.parametrize("case", sorted(OOM_ERRORS))
def test_out_of_memory_in_the_first_training_step(case, shard_dir, tiny_model_dir, tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    make = lambda out: pipeline.train(tiny_model_dir, shard_dir, None, LORA,
                                      CFG.model_copy(update={"checkpoint_every": 50}), 2, out)
    with monkeypatch.context() as patch:
        _oom_at_call(patch, 1, OOM_ERRORS[case])
        with pytest.raises(ResourceExhausted) as err:
            build(root, "adapters", make)
    assert str(err.value) == (
        f"out of memory during LoRA training of stage 2 at batch_size=2, max_seq_len=128 "
        f"({type(OOM_ERRORS[case]).__name__}): lower train.batch_size (raise train.grad_accum to keep the "
        f"effective batch) or train.max_seq_len; nothing was published at adapters/{KEY}")
    assert err.value.resource == "memory" and err.value.__cause__ is OOM_ERRORS[case]
    assert folders(root, "adapters") == []  # nothing to resume from: no partial either
    if case == "MemoryError":  # memory is back: the rerun trains (once is enough, it costs seconds)
        assert is_complete(build(root, "adapters", make))


def test_out_of_memory_after_a_checkpoint_keeps_it_and_the_rerun_resumes(shard_dir, tiny_model_dir, tmp_path,
                                                                         monkeypatch):
    root = tmp_path / "artifacts"
    make = lambda out: pipeline.train(tiny_model_dir, shard_dir, None, LORA, CFG, 2, out)
    with monkeypatch.context() as patch:
        _oom_at_call(patch, 3, MemoryError())  # steps 1 and 2 done and checkpointed
        with pytest.raises(ResourceExhausted, match=rf"nothing was published at adapters/{KEY}; "
                                                    rf"adapters/.partial-{KEY} is kept to resume from$"):
            build(root, "adapters", make)
    assert folders(root, "adapters") == [f".partial-{KEY}"]
    partial = root / "adapters" / f".partial-{KEY}"
    assert any((partial / name / "state.pt").is_file() for name in RESUMABLE_STATE)
    folder = build(root, "adapters", make)
    assert is_complete(folder) and folders(root, "adapters") == [KEY]
    assert json.loads((folder / "stats.json").read_text())["resumed_from_step"] == 2


def test_the_checkpoint_names_train_writes_are_resumable_state():
    assert train_module.CHECKPOINT in RESUMABLE_STATE
    assert getattr(train_module, "CHECKPOINT_PREV", train_module.CHECKPOINT) in RESUMABLE_STATE


@pytest.mark.parametrize("error", [RuntimeError("shape mismatch"), OSError(errno.EIO, "I/O error"),
                                   KeyError("prompt")], ids=["runtime", "eio", "key"])
def test_other_errors_pass_through_untouched(error):
    with pytest.raises(type(error)) as err:
        with resource_errors("anything", "/tmp"):
            raise error
    assert err.value is error  # not wrapped: a transient I/O error stays retryable


# ---------------------------------------------------------------------------------------------
# the whole flow
# ---------------------------------------------------------------------------------------------


def test_flow_disk_full_then_rerun(prefect_harness, tiny_data_dir, tmp_path, monkeypatch):
    from flows.dag import promptintern
    from promptintern.config import preset

    cfg = preset("tiny", {"data_dir": str(tiny_data_dir), "train_subset": 8,
                          "schedule": {"num_stages": 2, "k0": 1},
                          "eval": {"test_subset": 2, "baseline_full_prompt": False, "baseline_direct": False, "baseline_query_only": False}})
    root = tmp_path / "artifacts"
    with monkeypatch.context() as patch:
        patch.setattr(pq, "write_table", _failing_write_table(ENOSPC))
        with pytest.raises(ResourceExhausted, match=r"disk full \(ENOSPC\) while writing the stage [12] shard to "
                                                    r".*nothing was published at shards/"):
            promptintern(config=cfg, artifact_root=str(root))
    assert folders(root, "shards") == []
    assert not (root / "adapters").exists()
    # the disk has room again
    result = promptintern(config=cfg, artifact_root=str(root))
    assert [r["method"] for r in result["rows"]] == ["promptintern"]
    assert len([p for p in (root / "shards").iterdir() if p.is_dir() and is_complete(p)]) == 2


def test_flow_out_of_memory_in_training_then_rerun(prefect_harness, tiny_data_dir, tmp_path, monkeypatch):
    from flows.dag import promptintern
    from promptintern.config import preset

    cfg = preset("tiny", {"data_dir": str(tiny_data_dir), "train_subset": 8, "schedule": {"num_stages": 1, "k0": 0},
                          "train": {"checkpoint_every": 100},
                          "eval": {"test_subset": 2, "baseline_full_prompt": False, "baseline_direct": False, "baseline_query_only": False}})
    root = tmp_path / "artifacts"
    with monkeypatch.context() as patch:
        _oom_at_call(patch, 1, MemoryError())
        with pytest.raises(ResourceExhausted, match=r"out of memory during LoRA training of stage 1 at "
                                                    r"batch_size=4, max_seq_len=512 \(MemoryError\): lower "
                                                    r"train.batch_size"):
            promptintern(config=cfg, artifact_root=str(root))
    assert folders(root, "adapters") == []
    assert not (root / "merged").exists()
    result = promptintern(config=cfg, artifact_root=str(root))
    # one stage keeps the template (tau 1): its benchmark is also served with the template cached
    assert [r["method"] for r in result["rows"]] == ["promptintern", "promptintern, template cached"]


def test_a_stage_the_machine_cannot_hold_stops_before_loading_the_model(shard_dir, tiny_model_dir, tmp_path,
                                                                        monkeypatch):
    """The memory estimate (promptintern.memory) runs before the model is loaded: with less memory
    available than a step needs, the stage stops saying how much it needs and what to lower."""
    import promptintern.memory as memory

    loaded = []
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 256 * 2**20)  # 0.25 GB
    monkeypatch.setattr(train_module, "_lora_model", lambda *a, **k: loaded.append(1))
    with pytest.raises(ResourceExhausted) as err:
        build(tmp_path / "artifacts", "adapters",
              lambda out: pipeline.train(tiny_model_dir, shard_dir, None, LORA, CFG, 2, out))
    message = str(err.value)
    assert message.startswith("stage 2: a training step needs ~0.5") and "0.25 GB is available" in message
    assert "train.batch_size" in message and "train.max_seq_len" in message and err.value.resource == "memory"
    assert loaded == []
