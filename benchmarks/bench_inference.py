"""Benchmark inference: what the query-only prompt saves, and what batched generation buys.

Two comparisons on one model (default: the pipeline's merged model under ``artifacts/merged/``,
else the converted SmolLM2) and the first ``--n`` NL2Bash test rows:

1. Prompt forms, every instance generating exactly ``--new-tokens`` tokens (EOS ignored, so
   output length does not confound input cost): ``full`` = the task template + k BLEU-retrieved
   training shots + query (what a non-internalized model needs); ``query_only`` = the query with
   its cue (what PromptIntern's model is asked at inference); ``bare`` = the query text alone, no
   prefix, no cue, no chat wrapper (the floor: no prompt costs less than the query itself).
   Reported: input tokens per instance, s/instance at batch 1, instances/s batched, and ratios.
2. Our ``promptintern.generate.generate`` at ``--batch-size`` against a loop of batch-1 HF
   ``model.generate`` on the query-only prompts, greedy, natural stopping (EOS / the task's stop
   string, as in the pipeline's benchmark box); completions must agree.

Repeats are interleaved; medians are reported. Prints one JSON line, then a short table.

    python benchmarks/bench_inference.py                       # SmolLM2 (merged), 8 rows
    python benchmarks/bench_inference.py --model tiny --n 4    # smoke run

Files read: ``data/nl2bash/split/{train,test}.jsonl`` (``--data-dir``), ``artifacts/merged/<key>/``
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
from promptintern.datasets import get_task
from promptintern.generate import cut_at_stop, generate, stopping_criteria
from promptintern.cpu import set_torch_threads
from promptintern.models import load_model, load_tokenizer
from promptintern.prompts import render_prompt
from promptintern.retrieve import retrieve_for


def pick_model(spec: str, scratch: Path) -> Path:
    if spec == "merged":
        merged = sorted((ROOT / "artifacts" / "merged").glob("*/config.json"))
        return merged[0].parent if merged else resolve_model("smollm2-135m", scratch)
    return resolve_model(spec, scratch)


@torch.no_grad()
def fixed_length_seconds(model, tokenizer, prompts: list[str], batch_size: int, new_tokens: int) -> float:
    """Seconds to generate exactly ``new_tokens`` greedy tokens for every prompt (left-padded batches)."""
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    t0 = time.perf_counter()
    for start in range(0, len(encoded), batch_size):
        batch = tokenizer.pad({"input_ids": encoded[start : start + batch_size]}, return_tensors="pt")
        model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id)
    return time.perf_counter() - t0


@torch.no_grad()
def hf_batch1(model, tokenizer, prompts: list[str], max_new_tokens: int, stop) -> tuple[float, list[str]]:
    """The baseline: one prompt at a time through HF generate, greedy, stopping as the pipeline does."""
    texts = []
    t0 = time.perf_counter()
    for p in prompts:
        batch = tokenizer(p, add_special_tokens=False, return_tensors="pt")
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             stopping_criteria=stopping_criteria(tokenizer, stop, batch["input_ids"].shape[1]))
        texts.append(cut_at_stop(tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True), stop))
    return time.perf_counter() - t0, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="merged", help="merged (default), smollm2-135m, tiny, or a folder")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data")
    ap.add_argument("--n", type=int, default=8, help="first N test rows")
    ap.add_argument("--k", type=int, default=2, help="shots in the full prompt (the pipeline's stage-1 k)")
    ap.add_argument("--train-pool", type=int, default=1000, help="first N train rows as the shot pool")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16, help="forced output length for the prompt-form runs")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="cap for the batched-vs-batch-1 runs")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    set_torch_threads()
    torch.manual_seed(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    model_dir = pick_model(args.model, scratch)
    task = get_task("nl2bash")
    split = args.data_dir / "nl2bash" / "split"
    train = [json.loads(line) for line in (split / "train.jsonl").open()][: args.train_pool]
    test = [json.loads(line) for line in (split / "test.jsonl").open()][: args.n]
    shots = retrieve_for([r["nl"] for r in test], [r["nl"] for r in train], args.k)
    template = task.template.text
    forms = {
        "full": [render_prompt(task.format, r["nl"], template, [(train[j]["nl"], train[j]["cmd"]) for j in shots[i][::-1]])
                 for i, r in enumerate(test)],
        "query_only": [render_prompt(task.format, r["nl"]) for r in test],
        "bare": [r["nl"] for r in test],
    }
    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"
    model = load_model(model_dir)
    in_tokens = {f: statistics.mean(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in ps)
                 for f, ps in forms.items()}

    # warm-up: first calls allocate and pick kernels
    fixed_length_seconds(model, tokenizer, forms["query_only"][:2], 2, 2)
    times: dict[str, list[float]] = {}
    agree = []
    for r in range(args.repeats):
        plan = [(f, b) for f in forms for b in (1, args.batch_size)] + [("ours_batched", 0), ("hf_batch1", 0)]
        for name, bs in plan if r % 2 == 0 else plan[::-1]:
            if name == "ours_batched":
                gens = generate(model_dir, forms["query_only"], max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size, stop=task.stop, progress=False)
                times.setdefault(name, []).append(gens.seconds)
                ours_texts = gens.texts
            elif name == "hf_batch1":
                seconds, hf_texts = hf_batch1(model, tokenizer, forms["query_only"], args.max_new_tokens, task.stop)
                times.setdefault(name, []).append(seconds)
            else:
                times.setdefault(f"{name}@{bs}", []).append(
                    fixed_length_seconds(model, tokenizer, forms[name], bs, args.new_tokens))
        agree.append(sum(a == b for a, b in zip(ours_texts, hf_texts)) / len(test))
        print(f"# repeat {r}: load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    med = {k: statistics.median(v) for k, v in times.items()}
    n, bs = len(test), args.batch_size
    per_form = {f: {"input_tokens": round(in_tokens[f], 1),
                    "s_per_instance_batch1": round(med[f"{f}@1"] / n, 4),
                    "instances_per_s_batched": round(n / med[f"{f}@{bs}"], 3)} for f in forms}
    result = {
        "bench": "inference", "forms": per_form,
        "full_over_query_only": {
            "input_tokens": round(in_tokens["full"] / in_tokens["query_only"], 2),
            "latency_batch1": round(med["full@1"] / med["query_only@1"], 2),
            "throughput_batched": round(med["full@%d" % bs] / med["query_only@%d" % bs], 2)},
        "query_only_over_bare": {
            "input_tokens": round(in_tokens["query_only"] / in_tokens["bare"], 3),
            "latency_batch1": round(med["query_only@1"] / med["bare@1"], 3),
            "latency_batched": round(med["query_only@%d" % bs] / med["bare@%d" % bs], 3)},
        "batched_vs_hf_batch1": {
            "ours_s": round(med["ours_batched"], 3), "hf_batch1_s": round(med["hf_batch1"], 3),
            "speedup": round(med["hf_batch1"] / med["ours_batched"], 2),
            "completions_agree": min(agree)},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "model": args.model, "model_dir": str(model_dir), "n": n, "k": args.k, "batch_size": bs,
        "new_tokens_forced": args.new_tokens, "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats, "seed": args.seed, "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpu": cpu_model(), "cpu_flags_avx512_amx": cpu_flags(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    print(json.dumps(result))
    print(f"{'form':<12} {'in tokens':>10} {'s/inst @1':>10} {f'inst/s @{bs}':>10}")
    for f, v in per_form.items():
        print(f"{f:<12} {v['input_tokens']:>10.1f} {v['s_per_instance_batch1']:>10.3f} {v['instances_per_s_batched']:>10.2f}")
    q = result["query_only_over_bare"]
    print(f"query_only / bare: tokens {q['input_tokens']:.2f}x, latency @1 {q['latency_batch1']:.3f}x, @{bs} {q['latency_batched']:.3f}x")
    b = result["batched_vs_hf_batch1"]
    print(f"ours batched @{bs}: {b['ours_s']:.2f} s vs HF batch-1 loop {b['hf_batch1_s']:.2f} s = {b['speedup']:.2f}x "
          f"(completions agree {b['completions_agree']:.0%})")


if __name__ == "__main__":
    main()
