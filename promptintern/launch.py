"""Data-parallel training of one stage: ``train.processes`` processes started by torchrun.

The train box calls ``train_stage_parallel`` in place of ``promptintern.train.train_stage`` when
``train.processes`` > 1. It writes the stage's arguments to ``<work_dir>/launch.json`` and starts

    python -m torch.distributed.run --standalone --nproc-per-node N -m promptintern.launch <work_dir>/launch.json

(torchrun: its rendezvous, its environment, its handling of a process that dies). Each process runs
``train_stage`` with a ``DataParallel``: rank r takes the r-th slice of every micro-batch (every
process reads the whole shard and plans the same batches from the same seed), back-propagates its
slice's share of the batch's mean loss (token sums over its rows divided by the whole micro-batch's
token counts), and the LoRA gradients are summed across processes before clipping and the AdamW
step. So every process makes the update one process would make on the whole batch, up to the order
in which floating-point sums are taken (``tests/test_launch.py``: 2 CPU processes with gloo against 1
process, the same adapter within 1e-5). Rank 0 writes the checkpoints, the loss log and the adapter.

On CUDA each process takes the GPU of its ``LOCAL_RANK`` and NCCL; on the CPU, gloo. LoRA's
gradients are small (SmolLM2, r 16: 1.7M values; Llama-7B, r 32: 33M), so they are summed in one
flat all-reduce per optimizer step rather than through DDP's bucketed hooks, which would also run
one all-reduce per micro-batch of gradient accumulation. What differs from one process: LoRA
dropout draws its masks per process (the same distribution, not the same masks), and a resumed run
restores rank 0's random state in every process.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SPEC = "launch.json"


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the group, and the two collectives training needs."""

    rank: int
    world: int

    def rows(self, batch_rows: list[int]) -> list[int]:
        """This process's contiguous slice of a micro-batch (sizes differ by at most one row)."""
        n, extra = divmod(len(batch_rows), self.world)
        start = self.rank * n + min(self.rank, extra)
        return list(batch_rows[start:start + n + (self.rank < extra)])

    def sum_gradients(self, params, loss: float) -> float:
        """Sum every process's gradients (and its share of the step's loss) in one all-reduce; returns
        the step's whole loss."""
        import torch
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [torch.tensor([loss], device=grads[0].device)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
            offset += n
        return float(flat[-1])

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_stage_parallel(model_dir, shard_path, work_dir, lora, cfg, stage, init_adapter=None, on_step=None,
                         plan=None, probe=None, teacher=None, distill_form=None, hardware=None):
    """``train_stage`` across ``cfg.processes`` processes (module docstring); returns rank 0's report.
    ``on_step`` is called from the loss log rank 0 writes, as the steps land."""
    from promptintern.curriculum import StagePlan
    from promptintern.train import StageReport

    if probe is not None:
        raise ValueError("train.adaptive with train.processes > 1: the dev probe runs in one process; "
                         "set train.processes=1 for adaptive stage lengths")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = {"model_dir": str(model_dir), "shard_path": str(shard_path), "work_dir": str(work_dir),
            "lora": lora.model_dump(mode="json"), "train": cfg.model_dump(mode="json"), "stage": stage,
            "init_adapter": str(init_adapter) if init_adapter else None,
            "plan": plan.model_dump(mode="json") if isinstance(plan, StagePlan) else None,
            "teacher": str(teacher.folder) if teacher is not None else None,
            "distill_form": list(distill_form) if distill_form else None,
            "hardware": [hardware.device, hardware.dtype] if hardware is not None else None}
    (work_dir / SPEC).write_text(json.dumps(spec, indent=2))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={cfg.processes}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
               "-m", "promptintern.launch", str(work_dir / SPEC)]
    log.info("stage %d: %d processes: %s", stage, cfg.processes, " ".join(command))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                    os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(command, env=env)
    seen, total = 0, plan.steps if plan is not None else None
    while proc.poll() is None:  # report rank 0's steps as its loss log grows
        time.sleep(1.0)
        seen = _report_steps(work_dir / "log.jsonl", seen, total, on_step)
    _report_steps(work_dir / "log.jsonl", seen, total, on_step)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage}: data-parallel training failed (torchrun exit {proc.returncode}); "
                           f"every process's error is above. The command: {' '.join(command)}")
    stats = json.loads((work_dir / "stats.json").read_text())
    stats.pop("tokens_per_second", None)
    return StageReport(**stats)


def _report_steps(log_path: Path, seen: int, total: int | None, on_step) -> int:
    if on_step is None or not log_path.is_file():
        return seen
    entries = []
    for line in log_path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            break  # a line rank 0 is still writing
    for entry in entries[seen:]:
        on_step(entry["step"], total or entry["step"], entry["loss"])
    return max(seen, len(entries))


def main(spec_path: str) -> None:
    """One process of the group (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous)."""
    import torch
    import torch.distributed as dist

    from promptintern.config import LoraSettings, TrainSettings
    from promptintern.curriculum import StagePlan
    from promptintern.device import Hardware
    from promptintern.distill import TeacherLogits
    from promptintern.train import train_stage

    spec = json.loads(Path(spec_path).read_text())
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    hardware = Hardware(*spec["hardware"]) if spec["hardware"] else Hardware("cpu", "fp32")
    if hardware.kind == "cuda":
        hardware = Hardware(f"cuda:{local}", hardware.dtype)
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if hardware.kind == "cuda" else "gloo")
    try:
        train_stage(spec["model_dir"], spec["shard_path"], spec["work_dir"], LoraSettings(**spec["lora"]),
                    TrainSettings(**spec["train"]), spec["stage"], init_adapter=spec["init_adapter"],
                    plan=StagePlan(**spec["plan"]) if spec["plan"] else None,
                    teacher=TeacherLogits(Path(spec["teacher"])) if spec["teacher"] else None,
                    distill_form=tuple(spec["distill_form"]) if spec["distill_form"] else None,
                    hardware=hardware, parallel=DataParallel(rank, world))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # started by torchrun, see train_stage_parallel
    logging.basicConfig(level=logging.INFO, format=f"[rank {os.environ.get('RANK', '?')}] %(levelname)s %(message)s")
    main(sys.argv[1])
