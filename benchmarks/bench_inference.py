"""Benchmark inference against the machine's bounds: decode steps, batching, the template cache.

On one model (default: the pipeline's merged model under ``artifacts/merged/``, else the converted
SmolLM2) and the first ``--n`` test rows of ``--task`` (NL2Bash, or MBPP), in one run:

1. **Bounds of this machine.** A bandwidth probe (GB/s summing a 1 GiB fp32 tensor) and a matmul
   probe (GFLOP/s of the decode step's shapes: the model's Linear layers at batch 1 and at
   ``--batch-size``). A decode step cannot beat max(weights / bandwidth, FLOPs / matmul rate).
2. **The decode step**, ours (``promptintern.decode``) and HF ``generate``, at batch 1 and
   ``--batch-size``: (time for N+1 forced tokens - time for 1) / N, and its ratio to the bound.
3. **Batched generation vs a batch-1 loop of HF ``generate``** on the first ``--throughput-n``
   query-only prompts, greedy, natural stopping (EOS / the task's stop string, as the benchmark box
   does); completions compared. Ours both ways: continuous batching (the default: a finished row's
   slot goes to the next waiting row) and static batches of ``--batch-size`` rows that run until
   their longest answer ends (what batching gave before).
4. **The template cache.** The full prompt (template + k retrieved shots + query) generated with
   the template recomputed for every batch (HF ``generate``, and our loop without the prefix cache)
   and with it prefilled once (our loop, the default); completions compared; beside the query-only
   prompt (what PromptIntern's model is asked).
5. **Reduced precision**: bf16 weights (``eval.precision=bf16``) on the throughput rows, and int8
   dynamic quantization of the Linear layers (``torch.ao.quantization.quantize_dynamic``): the decode
   step, the speed-up over the fp32 HF batch-1 loop, and how many greedy completions stay identical
   to fp32 (their effect on the task metric: ``benchmarks/bench_quantize.py``).

Repeats are interleaved; medians are reported. Prints one JSON line, then a table.

    python benchmarks/bench_inference.py                       # SmolLM2 (merged), 16 rows
    python benchmarks/bench_inference.py --model tiny --n 4 --repeats 1    # smoke run

Files read: the task's data under ``--data-dir`` (``data/nl2bash/split/``, ``data/mbpp/``), ``artifacts/merged/<key>/``
or ``artifacts/models/<key>/``.
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

from bench_train import cpu_flags, cpu_model, resolve_model
from promptintern.cpu import set_torch_threads
from promptintern.datasets import get_task
from promptintern.decode import greedy_batch
from promptintern.generate import Generations, cut_at_stop
from promptintern.generate import generate_with, with_precision
from promptintern.models import load_model, load_tokenizer
from promptintern.prompts import render_prompt
from promptintern.retrieve import retrieve_for


def pick_model(spec: str, scratch: Path) -> Path:
    if spec == "merged":
        merged = sorted((ROOT / "artifacts" / "merged").glob("*/config.json"))
        return merged[0].parent if merged else resolve_model("smollm2-135m", scratch)
    return resolve_model(spec, scratch)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bandwidth_gb_s(repeats: int = 5) -> float:
    """Read bandwidth: GB/s summing a 1 GiB fp32 tensor (what streaming the weights once costs)."""
    x = torch.ones(256 * 1024 * 1024)
    x.sum()
    return x.numel() * 4 / median_seconds(lambda: x.sum(), repeats) / 1e9


def linear_shapes(model) -> list[tuple[int, int]]:
    """(in, out) of every Linear the decode step runs, the LM head included."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]


def matmul_gflops(shapes: list[tuple[int, int]], rows: int, repeats: int = 5) -> float:
    """GFLOP/s of ``rows`` x in @ in x out over the model's Linear shapes (the decode step's matmuls)."""
    weights = [torch.randn(o, i) for i, o in shapes]
    xs = {i: torch.randn(rows, i) for i, _ in shapes}

    def run():
        for w in weights:
            torch.nn.functional.linear(xs[w.shape[1]], w)

    run()
    flops = sum(2 * rows * i * o for i, o in shapes)
    return flops / median_seconds(run, repeats) / 1e9


@torch.no_grad()
def our_step_seconds(model, tokenizer, prompts: list[str], steps: int, repeats: int) -> float:
    """Seconds per decode step of our loop for this batch: (steps + 1 tokens - 1 token) / steps."""
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]

    def run(n):
        return lambda: greedy_batch(model, rows, n, None, tokenizer.pad_token_id)

    return (median_seconds(run(steps + 1), repeats) - median_seconds(run(1), repeats)) / steps


@torch.no_grad()
def hf_step_seconds(model, tokenizer, prompts: list[str], steps: int, repeats: int) -> float:
    batch = tokenizer.pad({"input_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]},
                          return_tensors="pt")

    def run(n):
        return lambda: model.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id)

    return (median_seconds(run(steps + 1), repeats) - median_seconds(run(1), repeats)) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="merged", help="merged (default), smollm2-135m, tiny, or a folder")
    ap.add_argument("--task", default="nl2bash", help="nl2bash (default) or mbpp: whose template and rows")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data")
    ap.add_argument("--n", type=int, default=16, help="first N test rows (the template-cache and int8 probes)")
    ap.add_argument("--throughput-n", type=int, default=64,
                    help="first N test rows for batched vs batch-1 generation (continuous batching needs rows "
                         "waiting: with as many rows as slots it is a static batch)")
    ap.add_argument("--k", type=int, default=2, help="shots in the full prompt (the pipeline's stage-1 k)")
    ap.add_argument("--train-pool", type=int, default=1000, help="first N train rows as the shot pool")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16, help="forced decode steps for the step-time probes")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="cap for the natural-stopping runs")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 dynamic quantization probe")
    args = ap.parse_args()

    threads = set_torch_threads()
    torch.manual_seed(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    model_dir = pick_model(args.model, scratch)
    task = get_task(args.task)
    train = task.load(args.data_dir, "train")[: args.train_pool]
    test = task.load(args.data_dir, "test")[: max(args.n, args.throughput_n)]
    shots = retrieve_for([r.query for r in test], [r.query for r in train], args.k)
    forms = {
        "full": [render_prompt(task.format, r.query, task.template.text,
                               [(train[j].query, train[j].target) for j in shots[i][::-1]]) for i, r in enumerate(test)],
        "query_only": [render_prompt(task.format, r.query) for r in test],
    }
    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"
    model = load_model(model_dir)
    in_tokens = {f: statistics.mean(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in ps)
                 for f, ps in forms.items()}
    bs, reps, n = args.batch_size, args.repeats, min(args.n, len(test))

    # 1. bounds
    shapes = linear_shapes(model)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = bandwidth_gb_s()
    gflops = {b: matmul_gflops(shapes, b) for b in (1, bs)}
    flops_per_row = sum(2 * i * o for i, o in shapes)
    bound = {b: max(weight_bytes / (bw * 1e9), b * flops_per_row / (gflops[b] * 1e9)) for b in (1, bs)}

    # 2. the decode step (query-only rows: attention is a small share, as at inference)
    q, many = forms["query_only"][:n], forms["query_only"][: args.throughput_n]
    forms["full"] = forms["full"][:n]
    step = {"ours@1": our_step_seconds(model, tokenizer, q[:1], args.steps, reps),
            f"ours@{bs}": our_step_seconds(model, tokenizer, q[:bs], args.steps, reps),
            "hf@1": hf_step_seconds(model, tokenizer, q[:1], args.steps, reps),
            f"hf@{bs}": hf_step_seconds(model, tokenizer, q[:bs], args.steps, reps)}

    # 3-4. whole generations, natural stopping, interleaved repeats
    def ours(prompts, batch_size, prefix_cache=True):
        return generate_with(model, tokenizer, prompts, args.max_new_tokens, batch_size, task.stop, progress=False,
                             prefix_cache=prefix_cache)

    def hf(prompts, batch_size):
        return generate_with(model, tokenizer, prompts, args.max_new_tokens, batch_size, task.stop, progress=False,
                             engine="hf")

    def static(prompts, batch_size):
        """Our loop in fixed batches of similar length, each until its longest answer ends."""
        rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        texts = [""] * len(rows)
        t0 = time.perf_counter()
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            stopped = (lambda ids: any(s in tokenizer.decode(ids, skip_special_tokens=True) for s in task.stop)
                       ) if task.stop else None
            for i, ids in zip(idx, greedy_batch(model, [rows[i] for i in idx], args.max_new_tokens,
                                                tokenizer.eos_token_id, tokenizer.pad_token_id, None, stopped)):
                texts[i] = cut_at_stop(tokenizer.decode([t for t in ids if t != tokenizer.eos_token_id],
                                                        skip_special_tokens=True), task.stop)
        return Generations(texts, [], [], time.perf_counter() - t0, batch_size)

    plan = {
        "query_only ours@batch": lambda: ours(many, bs),
        "query_only ours@batch static": lambda: static(many, bs),
        "query_only hf@1 loop": lambda: hf(many, 1),
        "full hf@batch (template recomputed)": lambda: hf(forms["full"], bs),
        "full ours@batch (template recomputed)": lambda: ours(forms["full"], bs, prefix_cache=False),
        "full ours@batch (template cached)": lambda: ours(forms["full"], bs),
    }
    seconds: dict[str, list[float]] = {k: [] for k in plan}
    texts: dict[str, list[str]] = {}
    prefix_tokens = 0
    for r in range(reps):
        for name in (list(plan) if r % 2 == 0 else list(plan)[::-1]):
            gens = plan[name]()
            seconds[name].append(gens.seconds)
            texts[name] = gens.texts
            prefix_tokens = max(prefix_tokens, gens.prefix_tokens)
        print(f"# repeat {r}: load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in seconds.items()}

    def agree_with(xs: list[str], ys: list[str]) -> float:
        return sum(x == y for x, y in zip(xs, ys)) / len(xs)

    def agree(a: str, b: str) -> float:
        return agree_with(texts[a], texts[b])

    def differences(a: str, b: str) -> list[dict]:
        return [{"row": i, a: x, b: y} for i, (x, y) in enumerate(zip(texts[a], texts[b])) if x != y]

    # 5. reduced precision
    half = with_precision(load_model(model_dir), "bf16")
    b16 = [generate_with(half, tokenizer, many, args.max_new_tokens, bs, task.stop, progress=False) for _ in range(reps)]
    bf16 = {"step_s_at_batch": our_step_seconds(half, tokenizer, q[:bs], args.steps, reps),
            "generate_s_at_batch": round(statistics.median(g.seconds for g in b16), 3),
            "speedup_vs_hf_batch1_fp32": round(med["query_only hf@1 loop"] / statistics.median(g.seconds for g in b16), 2),
            "completions_identical_to_fp32": agree_with(b16[0].texts, texts["query_only ours@batch"])}
    del half
    int8 = None
    if not args.no_int8:
        quantized = with_precision(load_model(model_dir), "int8-dynamic")
        q8 = generate_with(quantized, tokenizer, q, args.max_new_tokens, bs, task.stop, progress=False)
        int8 = {"step_s_at_batch": our_step_seconds(quantized, tokenizer, q[:bs], args.steps, reps),
                "step_s_at_1": our_step_seconds(quantized, tokenizer, q[:1], args.steps, reps),
                "generate_s_at_batch": round(q8.seconds, 3),
                "speedup_vs_hf_batch1_fp32": round(med["query_only hf@1 loop"] / len(many) / (q8.seconds / n), 2),
                "completions_identical_to_fp32": sum(a == b for a, b in zip(q8.texts, texts["query_only ours@batch"])) / n}

    result = {
        "bench": "inference",
        "bounds": {"read_gb_s": round(bw, 2), "weights_gb": round(weight_bytes / 1e9, 3),
                   "matmul_gflops": {str(b): round(v, 1) for b, v in gflops.items()},
                   "step_bound_s": {str(b): round(v, 4) for b, v in bound.items()}},
        "decode_step_s": {k: round(v, 4) for k, v in step.items()},
        "step_over_bound": {k: round(v / bound[1 if k.endswith("@1") else bs], 2) for k, v in step.items()},
        "batched_vs_hf_batch1": {
            "ours_s": round(med["query_only ours@batch"], 3), "hf_batch1_s": round(med["query_only hf@1 loop"], 3),
            "rows": len(many), "ours_static_s": round(med["query_only ours@batch static"], 3),
            "speedup": round(med["query_only hf@1 loop"] / med["query_only ours@batch"], 2),
            "static_speedup": round(med["query_only hf@1 loop"] / med["query_only ours@batch static"], 2),
            "continuous_vs_static": round(med["query_only ours@batch static"] / med["query_only ours@batch"], 2),
            "static_agrees": agree("query_only ours@batch static", "query_only ours@batch"),
            "completions_agree": agree("query_only ours@batch", "query_only hf@1 loop"),
            "differences": differences("query_only ours@batch", "query_only hf@1 loop")},
        "template_cache": {
            "prefix_tokens": prefix_tokens, "full_input_tokens": round(in_tokens["full"], 1),
            "query_only_input_tokens": round(in_tokens["query_only"], 1),
            "s_per_instance": {k: round(v / n, 4) for k, v in med.items() if k.startswith("full")}
            | {"query_only ours@batch": round(med["query_only ours@batch"] / len(many), 4)},
            "cached_speedup_vs_hf": round(med["full hf@batch (template recomputed)"]
                                          / med["full ours@batch (template cached)"], 2),
            "cached_speedup_vs_ours_recomputed": round(med["full ours@batch (template recomputed)"]
                                                       / med["full ours@batch (template cached)"], 2),
            "query_only_speedup_vs_cached": round(med["full ours@batch (template cached)"] / n
                                                  / (med["query_only ours@batch"] / len(many)), 2),
            "query_only_speedup_vs_recomputed": round(med["full hf@batch (template recomputed)"] / n
                                                      / (med["query_only ours@batch"] / len(many)), 2),
            "completions_agree_cached_vs_hf": agree("full ours@batch (template cached)",
                                                    "full hf@batch (template recomputed)"),
            "differences": differences("full ours@batch (template cached)", "full hf@batch (template recomputed)")},
        "bf16": bf16,
        "int8": int8,
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "task": args.task, "model": args.model, "model_dir": str(model_dir), "n": n, "k": args.k, "batch_size": bs,
        "steps": args.steps, "max_new_tokens": args.max_new_tokens, "repeats": reps, "seed": args.seed,
        "load_avg_1m": round(os.getloadavg()[0], 2), "cpu": cpu_model(), "cpu_flags_avx512_amx": cpu_flags(),
        "cpus": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
    }
    print(json.dumps(result))
    b = result["bounds"]
    print(f"machine: read {b['read_gb_s']} GB/s, weights {b['weights_gb']} GB, matmul {b['matmul_gflops']} GFLOP/s "
          f"-> step bound {b['step_bound_s']} s")
    for k, v in step.items():
        print(f"decode step {k:<8} {v * 1000:8.1f} ms   {result['step_over_bound'][k]:.2f}x the bound")
    x = result["batched_vs_hf_batch1"]
    print(f"query-only, {x['rows']} rows: ours @{bs} {x['ours_s']:.2f} s vs HF batch-1 loop {x['hf_batch1_s']:.2f} s = "
          f"{x['speedup']:.2f}x (completions agree {x['completions_agree']:.0%}); static batches {x['ours_static_s']:.2f} s "
          f"= {x['static_speedup']:.2f}x, continuous {x['continuous_vs_static']:.2f}x faster than static")
    t = result["template_cache"]
    for k, v in t["s_per_instance"].items():
        print(f"{k:<40} {v:7.3f} s/instance")
    print(f"template cached ({t['prefix_tokens']} of {t['full_input_tokens']} tokens): {t['cached_speedup_vs_hf']:.2f}x vs "
          f"HF recomputing it; query-only {t['query_only_speedup_vs_cached']:.2f}x faster than the cached full prompt "
          f"({t['query_only_speedup_vs_recomputed']:.2f}x than recomputed); completions agree "
          f"{t['completions_agree_cached_vs_hf']:.0%}")
    print(f"bf16 weights: step @{bs} {bf16['step_s_at_batch'] * 1000:.1f} ms; query-only @{bs} {bf16['generate_s_at_batch']:.2f} s "
          f"= {bf16['speedup_vs_hf_batch1_fp32']:.2f}x the fp32 HF batch-1 loop; completions identical to fp32 "
          f"{bf16['completions_identical_to_fp32']:.0%}")
    if int8:
        print(f"int8 dynamic: step @1 {int8['step_s_at_1'] * 1000:.1f} ms, @{bs} {int8['step_s_at_batch'] * 1000:.1f} ms "
              f"(fp32 {step['ours@1'] * 1000:.1f} / {step[f'ours@{bs}'] * 1000:.1f} ms); query-only @{bs} "
              f"{int8['speedup_vs_hf_batch1_fp32']:.2f}x the fp32 HF batch-1 loop; completions identical to fp32 "
              f"{int8['completions_identical_to_fp32']:.0%}")


if __name__ == "__main__":
    main()
