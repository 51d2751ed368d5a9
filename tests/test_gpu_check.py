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
