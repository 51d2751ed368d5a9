"""Does torch.compile or the attention kernel pay for a CPU decode step? Measured, not assumed.

On one model and the first ``--n`` query-only NL2Bash prompts at ``--batch-size``, the decode step
of ``promptintern.decode`` (time for ``--steps`` + 1 forced tokens minus time for 1, per step),
and a whole greedy generation (continuous batching, natural stopping), for:

* ``sdpa``: the model with PyTorch's scaled_dot_product_attention (transformers' default);
* ``eager``: transformers' own matmul-softmax attention;
* ``sdpa+compile``: ``torch.compile(model.forward, dynamic=True)`` (inductor; the first calls
  compile, timed apart and reported as ``compile_s``).

Each answer set is compared with ``sdpa``'s (greedy; a different kernel may round differently).
Repeats interleave the three; medians. One JSON line, then a table.

    python benchmarks/bench_compile.py --model smollm2-135m
    python benchmarks/bench_compile.py --model tiny --n 4 --steps 4 --repeats 1    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import promptintern  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch

from bench_train import cpu_model, resolve_model
from promptintern.cpu import set_torch_threads
from promptintern.datasets import get_task
from promptintern.decode import greedy_batch, greedy_stream
from promptintern.prompts import render_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default), tiny, or a folder")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data")
    ap.add_argument("--n", type=int, default=32, help="first N NL2Bash test rows, query-only prompts")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = set_torch_threads()
    model_dir = resolve_model(args.model, Path(tempfile.mkdtemp(prefix="bench_compile_")))
    task = get_task("nl2bash")
    test = task.load(args.data_dir, "test")[: args.n]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    rows = [tokenizer(render_prompt(task.format, r.query), add_special_tokens=False)["input_ids"] for r in test]
    rows.sort(key=len)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def stopped(ids):
        return any(s in tokenizer.decode(ids, skip_special_tokens=True) for s in task.stop)

    models, compile_s = {}, None
    for name in ("sdpa", "eager", "sdpa+compile"):
        m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                 attn_implementation=name.split("+")[0]).eval()
        if name.endswith("compile"):
            m.forward = torch.compile(m.forward, dynamic=True)
            t0 = time.perf_counter()  # compile on the shapes the runs below use
            greedy_batch(m, rows[: args.batch_size], 3, None, pad)
            greedy_stream(m, rows, 4, eos, pad, None, stopped, args.batch_size)
            compile_s = time.perf_counter() - t0
        models[name] = m

    def step(m) -> float:
        batch = rows[: args.batch_size]
        t = {}
        for n in (1, args.steps + 1):
            t0 = time.perf_counter()
            greedy_batch(m, batch, n, None, pad)
            t[n] = time.perf_counter() - t0
        return (t[args.steps + 1] - t[1]) / args.steps

    steps = {name: [] for name in models}
    whole = {name: [] for name in models}
    answers = {}
    with torch.no_grad():
        t0 = time.perf_counter()
        step(models["sdpa+compile"])  # the step probe's shapes compile too, outside the timing
        compile_s += time.perf_counter() - t0
        for r in range(args.repeats):
            for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
                steps[name].append(step(models[name]))
                t0 = time.perf_counter()
                answers[name] = greedy_stream(models[name], rows, args.max_new_tokens, eos, pad, None, stopped,
                                              args.batch_size)
                whole[name].append(time.perf_counter() - t0)
    med_step = {k: statistics.median(v) for k, v in steps.items()}
    med_whole = {k: statistics.median(v) for k, v in whole.items()}
    result = {
        "bench": "compile", "decode_step_s": {k: round(v, 4) for k, v in med_step.items()},
        "generate_s": {k: round(v, 3) for k, v in med_whole.items()},
        "speedup_vs_sdpa": {k: round(med_whole["sdpa"] / v, 2) for k, v in med_whole.items()},
        "answers_identical_to_sdpa": {k: f"{sum(a == b for a, b in zip(answers[k], answers['sdpa']))}/{len(rows)}"
                                      for k in models},
        "compile_s": round(compile_s, 1), "model": args.model, "n": len(rows), "batch_size": args.batch_size,
        "steps": args.steps, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "load_avg_1m": round(os.getloadavg()[0], 2), "cpu": cpu_model(), "cpus": os.cpu_count(),
        "torch_threads": threads, "torch": torch.__version__,
        "all": {"step": steps, "generate": whole},
    }
    print(json.dumps(result))
    for name in models:
        print(f"{name:<14} step {med_step[name] * 1000:7.1f} ms   generate {med_whole[name]:6.2f} s   "
              f"{result['speedup_vs_sdpa'][name]:.2f}x sdpa   answers identical {result['answers_identical_to_sdpa'][name]}")
    print(f"compile: {compile_s:.1f} s before the first compiled run")


if __name__ == "__main__":
    main()
