"""The device check (scripts/gpu_check.sh) runs on a CPU: its equivalence checks pass on the device
it finds, its memory estimate answers, and its GPU-only rows say they were not measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_device_check_runs_on_a_cpu_and_skips_the_gpu_rows_with_a_line(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--skip-flow", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"]["resolved"] == {"device": "cpu", "dtype": "fp32", "attention": "sdpa"}
    assert result["shared_prefix"]["ok"] and result["shared_prefix"]["loss_diff"] <= 1e-5
    assert result["prefix_cache"]["ok"] and result["prefix_cache"]["prefix_tokens"] > 0
    assert 20 < result["memory"]["estimate_gb"] < 30  # 12.55 GB of bf16 weights + activations of 1,024 tokens
    for gpu_only in ("train_7b", "generate_7b", "qlora"):
        assert result[gpu_only] == {"skipped": "no CUDA GPU here: not yet measured on a GPU"}
    assert "train_7b       no CUDA GPU here: not yet measured on a GPU" in run.stdout


def test_the_training_comparison_runs_our_path_and_a_plain_hf_trainer_on_the_same_batch(tiny_model_dir):
    """The 7B row's two sides, on the tiny model and the CPU: each returns one time per optimizer step
    after the first, and both really train (the LoRA weights move)."""
    import importlib.util

    import torch
    from peft import LoraConfig, get_peft_model

    from promptintern.device import Hardware
    from promptintern.models import load_model

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    ids = torch.randint(0, 100, (2, 24))
    labels = ids.clone()
    labels[:, :16] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    for timed in (check.step_times_ours, check.step_times_hf_trainer):
        model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
        model.train()
        before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
        times = timed(model, batch, 3, Hardware("cpu", "fp32"))
        assert len(times) == 3 and all(t > 0 for t in times), timed.__name__
        assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before), timed.__name__
