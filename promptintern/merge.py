"""Merge a LoRA adapter into its base model, and prove the merge changed nothing.

``merge_adapter`` folds the adapter into the base weights (peft ``merge_and_unload``) and saves a
plain HF folder. Before saving it compares the merged model's logits with base+adapter logits on
a probe batch; a difference above ``atol`` raises, so a broken merge never reaches the benchmark.
"""

from __future__ import annotations

from pathlib import Path

import torch

from promptintern.models import load_model, load_tokenizer

PROBE_TEXTS = (
    "Task: list all files in the current directory\nCommand:",
    "Write a python function to add two numbers.",
    "find . -name '*.py' | xargs wc -l",
)


def probe_batch(tokenizer, texts=PROBE_TEXTS) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "right"
    return tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    return model(**batch).logits.float()


def merge_adapter(model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path,
                  atol: float = 1e-4) -> dict:
    """Merge, check on the probe batch, save to ``out_dir``; returns the check's numbers."""
    from peft import PeftModel

    tokenizer = load_tokenizer(model_dir)
    batch = probe_batch(tokenizer)
    mask = batch["attention_mask"].bool()
    peft_model = PeftModel.from_pretrained(load_model(model_dir), str(adapter_dir))
    peft_model.eval()
    reference = _logits(peft_model, batch)[mask]
    merged = peft_model.merge_and_unload()
    merged.eval()
    got = _logits(merged, batch)[mask]
    max_diff = float((got - reference).abs().max())
    base_diff = float((reference - _logits(load_model(model_dir), batch)[mask]).abs().max())
    check = {"probe_tokens": int(mask.sum()), "max_abs_logit_diff": max_diff,
             "adapter_effect_max_abs": base_diff, "atol": atol}
    if not max_diff <= atol:
        raise RuntimeError(f"merged logits differ from base+adapter by {max_diff:.3g} > atol {atol}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return check
