"""Benchmark int8 dynamic quantization for generation: the speed it buys and the answers it moves.

Takes one benchmark folder of a finished run (``artifacts/evals/<key>``: its model, dataset, prompt
form and decoding settings are read from its manifest), generates for the first ``--n`` test rows
with the model in fp32 and with its Linear layers in int8 (``promptintern.generate.quantized``),
side by side (interleaved repeats, medians), and scores both with the task's metric: how many
answers stay identical, each side's score, and the paired-bootstrap p-value of the difference
(within the test noise or not).

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
from promptintern.generate import generate_with, quantized
from promptintern.models import load_model, load_tokenizer
from promptintern.pipeline import benchmark_prompts
from promptintern.significance import paired_bootstrap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", type=Path, help="a benchmark folder: artifacts/evals/<key>")
    ap.add_argument("--n", type=int, default=300, help="first N test rows")
    ap.add_argument("--repeats", type=int, default=1)
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
    models = {"fp32": load_model(at["model_dir"]), "int8-dynamic": quantized(load_model(at["model_dir"]), "int8-dynamic")}
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
    sig = paired_bootstrap(metric, systems, "fp32") if metric == "bleu" else None
    med = {name: statistics.median(v) for name, v in seconds.items()}
    result = {
        "bench": "quantize", "eval_dir": str(args.eval_dir), "model": at["model_dir"].name, "rows": len(test),
        "metric": metric, "score": {name: round(float(s[metric]), 2) for name, s in scores.items()},
        "p_value": sig["systems"]["int8-dynamic"]["p_value"] if sig else None,
        "answers_identical": round(sum(a == b for a, b in zip(answers["fp32"], answers["int8-dynamic"])) / len(test), 4),
        "s_per_instance": {name: round(v / len(test), 4) for name, v in med.items()},
        "speedup": round(med["fp32"] / med["int8-dynamic"], 2),
        "batch_size": settings["batch_size"], "max_new_tokens": settings["max_new_tokens"], "repeats": args.repeats,
        "cpu": cpu_model(), "torch_threads": threads, "torch": torch.__version__,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    print(f"{metric}: fp32 {result['score']['fp32']:.2f}, int8-dynamic {result['score']['int8-dynamic']:.2f} "
          f"(p {result['p_value']}); answers identical {result['answers_identical']:.1%}; "
          f"{result['s_per_instance']['fp32']:.3f} vs {result['s_per_instance']['int8-dynamic']:.3f} s/instance = "
          f"{result['speedup']:.2f}x")


if __name__ == "__main__":
    main()
