"""The teacher-logits box of context distillation (``promptintern.distill``): the teacher's top-k
logits at every answer token of every training row, computed once and read by every stage.

    python -c "from promptintern.distill import TeacherLogits; t = TeacherLogits(Path('artifacts/teachers/<key>'))"
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def write_teacher_logits(model_dir: Path, adapter: Path | None, shard: Path, out: Path, top_k: int,
                         max_seq_len: int, temperature: float, hardware=None, batch_size: int = 4) -> dict:
    """The teacher's top-k logits at every answer token of every row of ``shard`` (the rows in the
    teacher's prompt form), into ``out`` (see the module docstring); the teacher runs on ``hardware``
    (a ``promptintern.device.Hardware``; None: the CPU) and its logits are stored in fp32."""
    from tqdm.auto import tqdm

    from promptintern.cpu import set_torch_threads
    from promptintern.models import load_model, load_tokenizer
    from promptintern.shards import read_shard
    from promptintern.train import IGNORE_INDEX, collate, encode_row

    set_torch_threads()
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, hardware)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    table = read_shard(shard)
    ids = table.column("id").to_pylist()
    rows = [encode_row(tokenizer, p, t, max_seq_len)
            for p, t in zip(table.column("prompt").to_pylist(), table.column("target").to_pylist())]
    counts, indices, logits, logz = [], [], [], []
    for start in tqdm(range(0, len(rows), batch_size), desc="teacher logits", unit="batch", leave=False):
        batch = collate(rows[start:start + batch_size], tokenizer.pad_token_id)
        out_logits = model(input_ids=batch["input_ids"].to(model.device),
                           attention_mask=batch["attention_mask"].to(model.device)).logits[:, :-1]
        keep = (batch["labels"][:, 1:] != IGNORE_INDEX).to(out_logits.device)
        for r in range(keep.shape[0]):
            answer = out_logits[r][keep[r]].float()
            top = answer.topk(top_k, dim=-1)
            counts.append(int(keep[r].sum()))
            indices.append(top.indices.to(torch.int32).cpu().numpy())
            logits.append(top.values.cpu().numpy())
            logz.append(torch.logsumexp(answer / temperature, dim=-1).cpu().numpy())
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    top_logits, all_logz = np.concatenate(logits), np.concatenate(logz)
    np.savez(out / "teacher.npz", offsets=offsets, indices=np.concatenate(indices), logits=top_logits,
             logz=all_logz, temperature=np.float32(temperature))
    (out / "ids.json").write_text(json.dumps(ids))
    covered = np.exp(np.logaddexp.reduce(top_logits / temperature, axis=-1) - all_logz)
    stats = {"rows": len(ids), "answer_tokens": int(offsets[-1]), "top_k": top_k, "temperature": temperature,
             "mass_outside_top_k": {"mean": float(1 - covered.mean()), "max": float(1 - covered.min())},
             "teacher": model_dir.name + (f" + adapter {adapter.parent.name}" if adapter is not None else "")}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
