"""Benchmark the preprocessing boxes: template compression per method and rate, and shard materialization.

    python benchmarks/bench_preprocess.py                      # SmolLM2 (converted copy under artifacts/models)
    python benchmarks/bench_preprocess.py --model tiny --repeats 1 --rows 2000

Compression: the NL2Bash and MBPP task templates (``promptintern.datasets``) compressed by
``compress_template`` with each --methods at each --taus on the scoring model: seconds (median
of --repeats, after one untimed call that loads the model) and the achieved rate
(tokens_after / tokens_before in the model's tokens). The reference point is the model's
tokenizer alone (method ``none``: the counting every method does anyway).

Shards: ``promptintern.shards.write_shard`` on the NL2Bash train split (--rows, default all
8,090), verbatim template + k shots (default 10, the paper's stage 1) from the exact BLEU bank
(built once, not timed), with the model's tokenizer. Baselines on the same rows, in the same run:
``pyarrow write`` writes the same rendered rows without token counts (the I/O floor) and ``naive
loop`` renders and tokenizes row by row and writes with pandas (what one writes first). Also
reported: where our time goes (render / tokenize / write) and the whole DAG box
(``pipeline.shard``: tokenizer load, template check, shard, OpenAI JSONL export and validation).
Prints one JSON line, then the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import hardware, loadavg, median, print_table, timed  # noqa: E402


def find_model(spec: str, work: Path) -> Path:
    """A prepared model folder: an existing converted SmolLM2 under artifacts/models (its
    manifest names the spec), else ``prepare_model`` into a temporary folder."""
    from promptintern.models import prepare_model

    for manifest in sorted((ROOT / "artifacts" / "models").glob("*/manifest.json")):
        inputs = json.loads(manifest.read_text()).get("inputs", {})
        if inputs.get("spec") == spec and (manifest.parent / "config.json").is_file():
            return manifest.parent
    return prepare_model(spec, work / "model")


def bench_compression(model_dir: Path, methods: list[str], taus: list[float], repeats: int) -> list[dict]:
    from promptintern.compress import compress_template
    from promptintern.datasets import get_task

    rows = []
    for dataset in ("nl2bash", "mbpp"):
        task = get_task(dataset)
        for method in ["none", *methods]:
            t0 = time.perf_counter()
            compress_template(task.template, 0.5, method=method, model_dir=model_dir, question=task.description)
            first = time.perf_counter() - t0  # loads (and caches) the scoring model
            for tau in ([1.0] if method == "none" else taus):
                result, times = timed(lambda: compress_template(task.template, tau, method=method, model_dir=model_dir,
                                                                question=task.description), repeats)
                rows.append({"dataset": dataset, "method": method, "tau": tau, "seconds_median": median(times),
                             "seconds_all": [round(t, 3) for t in times], "first_call_s": round(first, 3),
                             "tokens_before": result.tokens_before, "tokens_after": result.tokens_after,
                             "rate_achieved": round(result.rate_achieved, 4)})
                print(f"  {dataset} {method} tau={tau}: {median(times):.2f} s, rate {result.rate_achieved:.3f}",
                      file=sys.stderr)
    return rows


def naive_shard(path: Path, train, neighbors, k: int, template_text: str, fmt, tokenizer) -> None:
    """The first thing one writes: one row at a time, a tokenizer call per text, pandas at the end."""
    import pandas as pd

    from promptintern.prompts import render_prompt

    records = []
    for i, row in enumerate(train):
        shots = [train[j] for j in neighbors[i, :k]][::-1]
        prompt = render_prompt(fmt, row.query, template_text, [(s.query, s.target) for s in shots])
        target = fmt.render_target(row.target)
        records.append({"id": row.id, "prompt": prompt, "target": target, "example_ids": [s.id for s in shots],
                        "prompt_tokens": len(tokenizer(prompt, add_special_tokens=False)["input_ids"]),
                        "target_tokens": len(tokenizer(target, add_special_tokens=False)["input_ids"])})
    pd.DataFrame.from_records(records).to_parquet(path, index=False)


def bench_shards(model_dir: Path, data_dir: Path, rows: int | None, k: int, repeats: int, work: Path) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from promptintern import pipeline
    from promptintern.datasets import get_task
    from promptintern.models import load_tokenizer
    from promptintern.retrieve import build_bank
    from promptintern.schedule import StageSpec
    from promptintern.shards import render_rows, write_shard

    task = get_task("nl2bash")
    train = task.load(str(data_dir), "train")[:rows]
    template_text = task.template.text
    tokenizer = load_tokenizer(model_dir)
    t0 = time.perf_counter()
    neighbors = build_bank([r.query for r in train], k).neighbors
    bank_s = time.perf_counter() - t0
    spec = StageSpec(stage=1, tau=1.0, k=k)
    fmt = task.format
    out = work / "shards"
    out.mkdir()

    # the whole DAG box's inputs, as the flow hands them over
    ds, tpl, bank_dir = work / "dataset", work / "template", work / "bank"
    for folder in (ds, tpl, bank_dir):
        folder.mkdir()
    pipeline.write_examples(ds / "train.jsonl", train)
    (ds / "info.json").write_text(json.dumps({"task": "nl2bash"}))
    (tpl / "template.txt").write_text(template_text)
    (tpl / "stats.json").write_text(json.dumps({"rate_achieved": 1.0}))
    np.save(bank_dir / "train_neighbors.npy", neighbors)

    def whole_box():
        box = work / f"box-{time.monotonic_ns()}"
        box.mkdir()
        return pipeline.shard(ds, tpl, bank_dir, spec, model_dir, box)

    # where our time goes, one pass each
    rendered, (render_s,) = timed(lambda: render_rows(train, train, neighbors, k, template_text, fmt), 1)
    prompts = [p for p, _ in rendered]
    targets = [fmt.render_target(r.target) for r in train]
    _, (tokenize_s,) = timed(lambda: (tokenizer(prompts, add_special_tokens=False),
                                      tokenizer(targets, add_special_tokens=False)), 1)
    table = pa.table({"id": [r.id for r in train], "prompt": prompts, "target": targets,
                      "example_ids": [ids for _, ids in rendered]})
    # interleaved (ours, naive, plain, box per repeat) so a load change hits every writer alike
    ours, naive, plain, box = [], [], [], []
    for _ in range(repeats):
        stats, t = timed(lambda: write_shard(out / "ours.parquet", train, train, neighbors, spec, template_text,
                                             fmt, tokenizer), 1)
        ours += t
        naive += timed(lambda: naive_shard(out / "naive.parquet", train, neighbors, k, template_text, fmt,
                                           tokenizer), 1)[1]
        plain += timed(lambda: pq.write_table(table, out / "plain.parquet"), 1)[1]
        box += timed(whole_box, 1)[1]
    n = len(train)
    prompt_tokens = pq.read_table(out / "ours.parquet", columns=["prompt_tokens"]).column("prompt_tokens").to_pylist()
    assert prompt_tokens == pq.read_table(out / "naive.parquet", columns=["prompt_tokens"]).column("prompt_tokens").to_pylist()
    return {
        "rows": n, "k": k, "tau": 1.0, "tokenizer": model_dir.name, "bank_build_s": round(bank_s, 3),
        "mean_prompt_tokens": round(stats["mean_prompt_tokens"], 1), "prompt_tokens_total": int(sum(prompt_tokens)),
        "ours_s_median": median(ours), "ours_s_all": [round(t, 3) for t in ours],
        "ours_rows_per_s": round(n / median(ours), 1),
        "ours_tokens_per_s": round(sum(prompt_tokens) / median(ours)),
        "breakdown_s": {"render": round(render_s, 3), "tokenize": round(tokenize_s, 3),
                        "write (pyarrow, no token columns)": median(plain)},
        "baseline_pyarrow_write_s_median": median(plain), "baseline_pyarrow_rows_per_s": round(n / median(plain), 1),
        "baseline_naive_loop_s_median": median(naive), "baseline_naive_rows_per_s": round(n / median(naive), 1),
        "naive_over_ours": round(median(naive) / median(ours), 3),
        "ours_over_pyarrow_write": round(median(ours) / median(plain), 1),
        "whole_box_s_median": median(box), "whole_box_s_all": [round(t, 3) for t in box],
        "baseline_naive_s_all": [round(t, 3) for t in naive], "whole_box_rows_per_s": round(n / median(box), 1),
        "token_counts_equal_naive": True,
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "unset (on)"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m | tiny | a prepared model folder")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data", help="holds nl2bash/split/train.jsonl")
    ap.add_argument("--methods", nargs="*", default=["llmlingua", "longllmlingua", "selective-context"])
    ap.add_argument("--taus", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=None, help="first N train rows for the shard (default all)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--skip-compression", action="store_true")
    ap.add_argument("--skip-shards", action="store_true")
    args = ap.parse_args()

    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    model_dir = Path(args.model) if Path(args.model).is_dir() else find_model(args.model, work)
    result = {"bench": "preprocess", "model": args.model, "model_dir": str(model_dir), "repeats": args.repeats,
              "seed": 0, "data": f"{args.data_dir}/nl2bash/split/train.jsonl, rows {args.rows or 'all'}",
              "load_avg_start": load_start}
    if not args.skip_compression:
        result["compression"] = bench_compression(model_dir, args.methods, args.taus, args.repeats)
    result["load_avg_mid"] = loadavg()
    if not args.skip_shards:
        result["shards"] = bench_shards(model_dir, args.data_dir, args.rows, args.k, args.repeats, work)
    result["load_avg_end"] = loadavg()
    result["hardware"] = hardware("torch", "transformers", "tokenizers", "llmlingua", "pyarrow", "pandas")
    print(json.dumps(result))

    if "compression" in result:
        print_table(["template", "method", "tau", "median s", "first call s", "tokens", "achieved rate"], [
            [r["dataset"], r["method"], r["tau"], f"{r['seconds_median']:.2f}", f"{r['first_call_s']:.1f}",
             f"{r['tokens_before']} -> {r['tokens_after']}", f"{r['rate_achieved']:.3f}"]
            for r in result["compression"]])
        print()
    if "shards" in result:
        s = result["shards"]
        print(f"stage shard: {s['rows']} NL2Bash train rows, template + {s['k']} shots, "
              f"{s['mean_prompt_tokens']:.0f} prompt tokens a row ({s['tokenizer']} tokenizer)")
        print_table(["writer", "median s", "rows/s", "vs ours"], [
            ["ours: write_shard (render + batch tokenize + write)", f"{s['ours_s_median']:.2f}",
             f"{s['ours_rows_per_s']:.0f}", "1.00"],
            ["baseline: naive per-row loop + pandas", f"{s['baseline_naive_loop_s_median']:.2f}",
             f"{s['baseline_naive_rows_per_s']:.0f}", f"{s['naive_over_ours']:.2f}"],
            ["baseline: pyarrow write of the rendered rows, no tokens", f"{s['baseline_pyarrow_write_s_median']:.2f}",
             f"{s['baseline_pyarrow_rows_per_s']:.0f}", f"{1 / s['ours_over_pyarrow_write']:.3f}"],
            ["whole box: pipeline.shard (+ tokenizer load, JSONL export)", f"{s['whole_box_s_median']:.2f}",
             f"{s['whole_box_rows_per_s']:.0f}", f"{s['whole_box_s_median'] / s['ours_s_median']:.2f}"],
        ])
        print("ours, one pass: " + ", ".join(f"{k} {v:.2f} s" for k, v in s["breakdown_s"].items()))
    print(f"load {load_start} -> {result['load_avg_mid']} -> {result['load_avg_end']}; "
          f"{result['hardware']['cpu']}, {result['hardware']['cores']} cores")


if __name__ == "__main__":
    main()
