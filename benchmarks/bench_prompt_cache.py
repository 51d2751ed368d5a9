"""Benchmark what internalizing a prompt saves against the baseline users would pick: prompt caching.

A serving stack (vLLM, SGLang) reuses the keys and values of a prompt's shared prefix, and the API
providers bill a cached prefix at a discount (OpenAI: half the input price; Anthropic: a cache read
at a tenth). So the fair comparison for PromptIntern's query-only prompt is the full prompt *with
its template cached*, not the full prompt recomputed on every call. For each task (NL2Bash, MBPP),
on the same model and the first ``--n`` test rows, side by side in one run (interleaved repeats,
medians):

* ``full, recomputed``: template + k retrieved shots + query, every batch from scratch;
* ``full, template cached``: the same prompts, the shared prefix (the template) prefilled once;
* ``query only``: what an internalized model is asked.

Every row generates exactly ``--new-tokens`` tokens (EOS ignored), so output length does not
confound input cost. Costs per 1,000 queries use ``promptintern/prices.json`` (cached input tokens at
the cached price where a model lists one), tokens counted with the model's own tokenizer.

    python benchmarks/bench_prompt_cache.py                    # SmolLM2, NL2Bash and MBPP, 16 rows each
    python benchmarks/bench_prompt_cache.py --model tiny --n 4 --repeats 1    # smoke run
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
from promptintern.cost import cost_report, load_prices
from promptintern.cpu import set_torch_threads
from promptintern.datasets import get_task
from promptintern.decode import common_prefix_len, greedy_batch, prefill
from promptintern.models import load_model, load_tokenizer
from promptintern.prompts import render_prompt
from promptintern.retrieve import retrieve_for

PRICED = ("gpt-4o-2024-08-06", "claude-3-5-sonnet", "gpt-4")


@torch.no_grad()
def forced_seconds(model, tokenizer, rows: list[list[int]], new_tokens: int, batch_size: int, cached: bool) -> float:
    """Wall seconds to generate exactly ``new_tokens`` for every row, the shared prefix prefilled
    once (``cached``; the prefill is counted) or every batch run whole."""
    t0 = time.perf_counter()
    shared = common_prefix_len(rows) if cached else 0
    prefix = prefill(model, rows[0][:shared]) if shared else None
    for start in range(0, len(rows), batch_size):
        batch = [r[shared:] for r in rows[start:start + batch_size]]
        greedy_batch(model, batch, new_tokens, None, tokenizer.pad_token_id, prefix)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default), tiny, or a folder")
    ap.add_argument("--tasks", default="nl2bash,mbpp")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data")
    ap.add_argument("--n", type=int, default=16, help="first N test rows per task")
    ap.add_argument("--k", type=int, default=2, help="shots in the full prompt (the pipeline's stage-1 k)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    threads = set_torch_threads()
    model_dir = resolve_model(args.model, Path(tempfile.mkdtemp(prefix="bench_prompt_cache_")))
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir)
    prices = load_prices()
    jobs, rows_by_task, meta = {}, {}, {}
    for name in args.tasks.split(","):
        task = get_task(name)
        train = task.load(args.data_dir, "train")[:1000]
        test = task.load(args.data_dir, "test")[: args.n]
        shots = retrieve_for([r.query for r in test], [r.query for r in train], args.k)
        full = [render_prompt(task.format, r.query, task.template.text,
                              [(train[j].query, train[j].target) for j in shots[i][::-1]]) for i, r in enumerate(test)]
        query = [render_prompt(task.format, r.query) for r in test]
        encode = lambda ps: [tokenizer(p, add_special_tokens=False)["input_ids"] for p in ps]  # noqa: E731
        rows_by_task[name] = {"full": encode(full), "query": encode(query)}
        meta[name] = {"prefix_tokens": common_prefix_len(rows_by_task[name]["full"]),
                      "full_tokens": statistics.mean(map(len, rows_by_task[name]["full"])),
                      "query_tokens": statistics.mean(map(len, rows_by_task[name]["query"]))}
        for form, rows, cached in (("full, recomputed", "full", False), ("full, template cached", "full", True),
                                   ("query only", "query", True)):
            jobs[(name, form)] = (rows, cached)
    forced_seconds(model, tokenizer, rows_by_task[next(iter(rows_by_task))]["query"][:2], 2, 2, False)  # warm-up
    seconds: dict[tuple, list[float]] = {key: [] for key in jobs}
    for r in range(args.repeats):
        for key in list(jobs) if r % 2 == 0 else list(jobs)[::-1]:
            form, cached = jobs[key]
            seconds[key].append(forced_seconds(model, tokenizer, rows_by_task[key[0]][form], args.new_tokens,
                                               args.batch_size, cached))
        print(f"# repeat {r}: load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    results = {}
    for name, m in meta.items():
        n = len(rows_by_task[name]["full"])
        s = {form: statistics.median(seconds[(name, form)]) / n
             for form in ("full, recomputed", "full, template cached", "query only")}
        costs = {
            "full, recomputed": cost_report(m["full_tokens"], args.new_tokens, s["full, recomputed"], n, prices),
            "full, template cached": cost_report(m["full_tokens"], args.new_tokens, s["full, template cached"], n,
                                                 prices, cached_input_tokens_per_query=m["prefix_tokens"]),
            "query only": cost_report(m["query_tokens"], args.new_tokens, s["query only"], n, prices),
        }
        results[name] = {
            "input_tokens": {"full": round(m["full_tokens"], 1), "template_prefix": m["prefix_tokens"],
                             "query_only": round(m["query_tokens"], 1)},
            "s_per_instance": {k: round(v, 4) for k, v in s.items()},
            "query_only_speedup": {"vs recomputed": round(s["full, recomputed"] / s["query only"], 2),
                                   "vs template cached": round(s["full, template cached"] / s["query only"], 2)},
            "cache_speedup": round(s["full, recomputed"] / s["full, template cached"], 2),
            "usd_per_1k_queries": {form: {p: round(c.cost_per_1k_queries[p], 4) for p in PRICED}
                                   for form, c in costs.items()},
            "query_only_cost_saved_pct": {
                against: {p: round(100 * (1 - costs["query only"].cost_per_1k_queries[p]
                                          / costs[against].cost_per_1k_queries[p]), 1) for p in PRICED}
                for against in ("full, recomputed", "full, template cached")},
            "seconds_all": {form: [round(x, 3) for x in seconds[(name, form)]] for form in s},
        }
    out = {"bench": "prompt_cache", "tasks": results, "model": args.model, "n": args.n, "k": args.k,
           "new_tokens_forced": args.new_tokens, "batch_size": args.batch_size, "repeats": args.repeats,
           "tokens": "the model's own tokenizer", "prices": f"promptintern/prices.json ({', '.join(PRICED)})",
           "cpu": cpu_model(), "cpus": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
           "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(out))
    for name, r in results.items():
        t = r["input_tokens"]
        print(f"{name}: full prompt {t['full']} tokens, of which the template prefix {t['template_prefix']}; "
              f"query only {t['query_only']}")
        for form, sec in r["s_per_instance"].items():
            usd = r["usd_per_1k_queries"][form]
            print(f"  {form:<22} {sec:7.3f} s/instance   USD/1K: " + ", ".join(f"{p} {v:.3f}" for p, v in usd.items()))
        print(f"  query only: {r['query_only_speedup']['vs recomputed']:.2f}x faster than recomputed, "
              f"{r['query_only_speedup']['vs template cached']:.2f}x than template cached; cost saved vs cached: "
              + ", ".join(f"{p} {v:.1f}%" for p, v in r["query_only_cost_saved_pct"]["full, template cached"].items()))


if __name__ == "__main__":
    main()
