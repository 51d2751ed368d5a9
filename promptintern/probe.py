"""The dev probe of adaptive stage lengths: how well the model in training answers in the *next*
stage's prompt form, on held-out rows (``train.adaptive``, ``promptintern.curriculum.StageProbe``).

Its rows are a shard (``pipeline.shard(..., split="dev")``): the last ``train.adaptive.dev_rows``
rows of the dev split, rendered exactly as the next stage will render its training rows. Two
scores, higher is better:

* ``generate``: greedy answers, post-processed and scored by the task's own metric (BLEU for
  NL2Bash, Pass@1 in the sandbox for MBPP), the metric the benchmark reports;
* ``nll``: minus the mean teacher-forced loss on the reference answers; cheaper, but on NL2Bash
  it did not predict greedy BLEU (docs/results.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from promptintern.config import AdaptiveSettings
from promptintern.curriculum import StageProbe


def stage_probe(model_dir: Path, probe_shard: Path, dataset_dir: Path, adaptive: AdaptiveSettings,
                max_seq_len: int, max_new_tokens: int, batch_size: int) -> StageProbe:
    """A ``StageProbe`` over the rows of ``probe_shard`` (a dev-split shard in the next stage's form)."""
    from promptintern.datasets import Example, get_task
    from promptintern.models import load_tokenizer
    from promptintern.shards import read_shard
    from promptintern.train import collate, encode_row, target_loss

    table = read_shard(probe_shard / "shard.parquet")
    prompts, targets = table.column("prompt").to_pylist(), table.column("target").to_pylist()
    tokenizer = load_tokenizer(model_dir)

    if adaptive.probe == "nll":
        rows = [encode_row(tokenizer, p, t, max_seq_len) for p, t in zip(prompts, targets)]

        def score(model) -> float:
            device = next(model.parameters()).device
            losses = [float(target_loss(model, {k: v.to(device) for k, v in
                                                collate(rows[i:i + batch_size], tokenizer.pad_token_id).items()},
                                        share_prefix=False)) for i in range(0, len(rows), batch_size)]
            return -sum(losses) / len(losses)
    else:
        from promptintern.generate import generate_with

        task = get_task(json.loads((dataset_dir / "info.json").read_text())["task"])
        lines = (dataset_dir / "dev.jsonl").read_text(encoding="utf-8").splitlines()
        examples = [Example.model_validate_json(line) for line in lines if line.strip()]

        def score(model) -> float:
            texts = generate_with(model, tokenizer, prompts, max_new_tokens, batch_size, task.stop, progress=False).texts
            result = task.score([task.postprocess(t) for t in texts], examples, {"mode": "auto", "workers": 2,
                                                                                  "timeout_s": 10.0})
            return float(result[result["metric"]])

    return StageProbe(score=torch.no_grad()(score), every=adaptive.every, patience=adaptive.patience,
                      min_delta=adaptive.min_delta, min_steps=adaptive.min_steps)
