"""Benchmark lower precision for generation (bf16, int8): the speed it buys and the answers it moves.

Takes one benchmark folder of a finished run (``artifacts/evals/<key>``: its model, dataset, prompt
form and decoding settings are read from its manifest), generates for the first ``--n`` test rows
with the model in fp32, bf16 and int8-dynamic (``promptintern.generate.with_precision``), side by
side (interleaved repeats, medians), and scores each with the task's metric: how many answers stay
identical to fp32, each score, and the paired-bootstrap p-value against fp32 (within the test noise
or not).

    python benchmarks/bench_quantize.py artifacts/evals/<key> --n 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import promptintern  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch

from bench_train import cpu_model
from promptintern.cpu import set_torch_threads
from promptintern.generate import PRECISIONS, generate_with, with_precision
from promptintern.models import load_model, load_tokenizer
from promptintern.pipeline import benchmark_prompts
from promptintern.significance import paired_bootstrap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", type=Path, help="a benchmark folder: artifacts/evals/<key>")
    ap.add_argument("--n", type=int, default=300, help="first N test rows")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help=f"comma-separated, of {PRECISIONS}")
    args = ap.parse_args()

    threads = set_torch_threads()
    root = args.eval_dir.resolve().parents[1]
    inputs = json.loads((args.eval_dir / "manifest.json").read_text())["inputs"]
    at = {key: (root / inputs[key]) if inputs.get(key) else None
          for key in ("model_dir", "dataset_dir", "template_dir", "bank_dir")}
    task, test, _, prompts, _ = benchmark_prompts(at["model_dir"], at["dataset_dir"], at["template_dir"],
                                                  at["bank_dir"], inputs["k"], "bench", inputs.get("chat", "off"))
    test, prompts = test[: args.n], prompts[: args.n]
    settings = dict(max_new_tokens=inputs["eval"]["max_new_tokens"], batch_size=inputs["eval"]["batch_size"],
                    stop=task.stop, progress=False)
    tokenizer = load_tokenizer(at["model_dir"])
    models = {p: with_precision(load_model(at["model_dir"]), p) for p in args.precisions.split(",")}
    if "fp32" not in models:
        ap.error("--precisions must include fp32, the reference")
    seconds: dict[str, list[float]] = {name: [] for name in models}
    texts: dict[str, list[str]] = {}
    for r in range(args.repeats):
        for name in list(models) if r % 2 == 0 else list(models)[::-1]:
            gens = generate_with(models[name], tokenizer, prompts, **settings)
            seconds[name].append(gens.seconds)
            texts[name] = gens.texts
        print(f"# repeat {r}: load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    answers = {name: [task.postprocess(t) for t in ts] for name, ts in texts.items()}
    scores = {name: task.score(a, test, {"mode": "auto", "workers": 2, "timeout_s": 10.0}) for name, a in answers.items()}
    metric = scores["fp32"]["metric"]
    systems = {name: [{"prediction": p, "reference": row.target, "score": None} for p, row in zip(a, test)]
               for name, a in answers.items()}
    sig = paired_bootstrap(metric, systems, "fp32") if metric == "bleu" else None  # other metrics: per-row scores needed
    med = {name: statistics.median(v) for name, v in seconds.items()}
    result = {
        "bench": "quantize", "eval_dir": str(args.eval_dir), "model": at["model_dir"].name, "rows": len(test),
        "metric": metric, "score": {name: round(float(s[metric]), 2) for name, s in scores.items()},
        "p_value_vs_fp32": {name: r["p_value"] for name, r in sig["systems"].items() if name != "fp32"} if sig else None,
        "answers_identical_to_fp32": {name: round(sum(a == b for a, b in zip(answers["fp32"], ans)) / len(test), 4)
                                      for name, ans in answers.items() if name != "fp32"},
        "s_per_instance": {name: round(v / len(test), 4) for name, v in med.items()},
        "speedup_vs_fp32": {name: round(med["fp32"] / v, 2) for name, v in med.items() if name != "fp32"},
        "batch_size": settings["batch_size"], "max_new_tokens": settings["max_new_tokens"], "repeats": args.repeats,
        "cpu": cpu_model(), "torch_threads": threads, "torch": torch.__version__,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    for name in models:
        extra = "" if name == "fp32" else (
            f"  p vs fp32 {result['p_value_vs_fp32'][name] if sig else 'n/a'}, answers identical "
            f"{result['answers_identical_to_fp32'][name]:.1%}, {result['speedup_vs_fp32'][name]:.2f}x faster")
        print(f"{name:<13} {metric} {result['score'][name]:6.2f}  {result['s_per_instance'][name]:.3f} s/instance{extra}")


if __name__ == "__main__":
    main()
