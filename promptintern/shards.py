"""Stage shards: one Parquet file per training stage, every row's prompt fully rendered.

Schema of ``shard.parquet`` (one row per training example, in training-set order):

=================  ==============  ==========================================================
column             type            meaning
=================  ==============  ==========================================================
id                 string          the example's id in its dataset (e.g. ``train-17``)
stage              int32           1-based stage index t
tau                float32         template rate the row was rendered with (tau_t; the last stage's
                                   for a replayed row, see ``Replay``)
k                  int32           number of shots in the prompt (k_t, or the last stage's)
prompt             string          template (compressed to tau_t) + k_t shots + query + cue
target             string          what the model must produce after the prompt
example_ids        list<string>    ids of the shots, most similar first
prompt_tokens      int32           tokens of ``prompt`` under the run's tokenizer
target_tokens      int32           tokens of ``target`` (EOS not counted)
=================  ==============  ==========================================================

File-level metadata (``schema.metadata``): ``promptintern.stage`` holds a JSON object with the
stage spec, the template's achieved rate and the tokenizer's name.

    python -c "import pyarrow.parquet as pq; print(pq.read_table('.../shard.parquet').schema)"
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from promptintern.datasets.base import Example
from promptintern.prompts import PromptFormat, render, render_target
from promptintern.schedule import StageSpec

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("stage", pa.int32()),
        ("tau", pa.float32()),
        ("k", pa.int32()),
        ("prompt", pa.string()),
        ("target", pa.string()),
        ("example_ids", pa.list_(pa.string())),
        ("prompt_tokens", pa.int32()),
        ("target_tokens", pa.int32()),
    ]
)


@dataclass(frozen=True)
class Replay:
    """Rows of an earlier stage that train in the final (inference) prompt form instead of the
    stage's own (``schedule.replay``): the mixed-forms curriculum. Same rows, same step count."""

    rows: frozenset[int]
    spec: StageSpec
    template_text: str


def replay_rows(n: int, fraction: float, stage: int, seed: int) -> frozenset[int]:
    """Which of a stage's ``n`` rows are replayed: ``round(fraction * n)`` of them, drawn afresh for
    every stage from ``seed``."""
    return frozenset(random.Random(f"replay-{seed}-{stage}").sample(range(n), round(fraction * n)))


def render_rows(
    rows: Sequence[Example],
    pool: Sequence[Example],
    neighbors: np.ndarray | None,
    k: int,
    template_text: str,
    fmt: PromptFormat,
    *,
    tokenizer=None,
    chat: bool = False,
) -> list[tuple[str, list[str]]]:
    """(prompt, shot ids) per row; shots are the first ``k`` neighbors of each row in ``pool``.

    Shots are listed most similar last, so the best example sits next to the query. ``chat``:
    rendered through the tokenizer's chat template (``promptintern.prompts.render``).
    """
    if k and (neighbors is None or neighbors.shape[1] < k):
        have = 0 if neighbors is None else neighbors.shape[1]
        raise ValueError(f"the retrieval bank holds {have} neighbors per row (at most the training rows "
                         f"minus one, {len(pool) - 1} here); the stage needs k={k}: lower schedule.k0 "
                         f"or use more training rows (train_subset)")
    out = []
    for i, row in enumerate(rows):
        shots = [pool[j] for j in neighbors[i, :k]][::-1] if k else []
        prompt = render(fmt, row.query, template_text, [(s.query, s.target) for s in shots],
                        tokenizer=tokenizer, chat=chat)
        out.append((prompt, [s.id for s in shots]))
    return out


def write_shard(
    path: Path,
    rows: Sequence[Example],
    pool: Sequence[Example],
    neighbors: np.ndarray | None,
    spec: StageSpec,
    template_text: str,
    fmt: PromptFormat,
    tokenizer,
    extra_metadata: dict | None = None,
    chat: bool = False,
    replay: Replay | None = None,
) -> dict:
    """Render and write one stage's shard; returns summary statistics (also stored as metadata).
    ``chat``: prompts through the tokenizer's chat template, targets as the assistant's answer.
    ``replay``: those rows are rendered in the final form (their ``tau`` / ``k`` columns say so)."""
    rendered = render_rows(rows, pool, neighbors, spec.k, template_text, fmt, tokenizer=tokenizer, chat=chat)
    forms = [(spec.tau, spec.k)] * len(rows)
    if replay is not None and replay.rows:
        idx = sorted(replay.rows)
        final = render_rows([rows[i] for i in idx], pool, None if neighbors is None else neighbors[idx],
                            replay.spec.k, replay.template_text, fmt, tokenizer=tokenizer, chat=chat)
        for i, row in zip(idx, final):
            rendered[i], forms[i] = row, (replay.spec.tau, replay.spec.k)
    prompts = [p for p, _ in rendered]
    targets = [render_target(fmt, r.target, tokenizer=tokenizer, chat=chat) for r in rows]
    prompt_tokens = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    target_tokens = [len(ids) for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]]
    stats = {
        "stage": spec.model_dump(),
        "rows": len(rows),
        "mean_prompt_tokens": float(np.mean(prompt_tokens)) if rows else 0.0,
        "mean_target_tokens": float(np.mean(target_tokens)) if rows else 0.0,
        "max_prompt_tokens": int(max(prompt_tokens, default=0)),
        "prompt_style": "chat" if chat else "plain",
        "replayed_rows": len(replay.rows) if replay is not None else 0,
        **(extra_metadata or {}),
    }
    table = pa.table(
        {
            "id": [r.id for r in rows],
            "stage": [spec.stage] * len(rows),
            "tau": [tau for tau, _ in forms],
            "k": [k for _, k in forms],
            "prompt": prompts,
            "target": targets,
            "example_ids": [ids for _, ids in rendered],
            "prompt_tokens": prompt_tokens,
            "target_tokens": target_tokens,
        },
        schema=SCHEMA.with_metadata({"promptintern.stage": json.dumps(stats, sort_keys=True)}),
    )
    pq.write_table(table, path)
    return stats


def read_shard(path: Path) -> pa.Table:
    table = pq.read_table(path)
    if not table.schema.remove_metadata().equals(SCHEMA):
        raise ValueError(f"{path}: schema differs from promptintern.shards.SCHEMA:\n{table.schema}")
    return table


def shard_stats(path: Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"promptintern.stage", b"{}"))
