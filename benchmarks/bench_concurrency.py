"""Benchmark two runs on one machine: side by side must not be slower than one after the other.

Each "run" is a subprocess that holds a run lease (as every flow run does, ``promptintern.cpu``),
loads the model and greedy-decodes ``--n`` query-only NL2Bash prompts for ``--tokens`` forced
tokens at batch ``--batch-size``. Three schedules, timed end to end (wall seconds for both runs):

* ``sequential``: run A, then run B; each alone sizes its torch pool to every usable core;
* ``concurrent``: A and B at once; each counts two active runs and takes half the cores (ours);
* ``oversubscribed``: A and B at once, each forced to every core (``PROMPTINTERN_THREADS``):
  what every run did before it counted its neighbours.

Goal: concurrent / sequential <= 1.0. Prints one JSON line, then a table.

    python benchmarks/bench_concurrency.py                    # SmolLM2, 8 rows, 32 tokens
    python benchmarks/bench_concurrency.py --model tiny       # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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

from bench_train import cpu_model, resolve_model
from promptintern.cpu import usable_cores

# One run: take the lease, wait (bounded) until the expected neighbours hold theirs, then size the
# pool and decode. The wait stands in for a flow's first boxes, which run before any model does.
RUN = """
import json, sys, time
from pathlib import Path
from promptintern.cpu import active_runs, run_lease, set_torch_threads
model_dir, prompts, tokens, batch, expect = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with run_lease():
    deadline = time.time() + 30
    while active_runs() < expect and time.time() < deadline:
        time.sleep(0.05)
    threads = set_torch_threads()
    import torch
    from promptintern.decode import greedy_batch
    from promptintern.models import load_model, load_tokenizer
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    t0 = time.perf_counter()
    for start in range(0, len(rows), batch):
        greedy_batch(model, rows[start:start + batch], tokens, None, tok.pad_token_id)
    print(json.dumps({"threads": threads, "decode_s": time.perf_counter() - t0}))
"""


def start(model_dir: Path, prompts: list[str], args, expect: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, str(model_dir), json.dumps(prompts), str(args.tokens),
                             str(args.batch_size), str(expect)], stdout=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"a benchmark run failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def schedule(name: str, model_dir: Path, prompts: list[str], args, lease_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PROMPTINTERN_THREADS")}
    env["PROMPTINTERN_LEASE_DIR"] = lease_dir
    if name == "oversubscribed":
        env["PROMPTINTERN_THREADS"] = str(usable_cores())
    t0 = time.perf_counter()
    if name == "sequential":
        runs = [finish(start(model_dir, prompts, args, 1, env)) for _ in range(2)]
    else:
        procs = [start(model_dir, prompts, args, 2, env) for _ in range(2)]
        runs = [finish(p) for p in procs]
    return {"wall_s": time.perf_counter() - t0, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default), tiny, or a folder")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data")
    ap.add_argument("--n", type=int, default=8, help="first N test rows per run")
    ap.add_argument("--tokens", type=int, default=32, help="forced new tokens per row")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    from promptintern.datasets import get_task
    from promptintern.prompts import render_prompt

    scratch = Path(tempfile.mkdtemp(prefix="bench_concurrency_"))
    model_dir = resolve_model(args.model, scratch)
    task = get_task("nl2bash")
    test = [json.loads(line) for line in (args.data_dir / "nl2bash" / "split" / "test.jsonl").open()][: args.n]
    prompts = [render_prompt(task.format, r["nl"]) for r in test]
    names = ("sequential", "concurrent", "oversubscribed")
    results: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(schedule(name, model_dir, prompts, args, str(scratch / "leases")))
        print(f"# repeat {r}: load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    wall = {n: statistics.median(x["wall_s"] for x in v) for n, v in results.items()}
    out = {
        "bench": "concurrency", "wall_s": {k: round(v, 2) for k, v in wall.items()},
        "concurrent_over_sequential": round(wall["concurrent"] / wall["sequential"], 3),
        "oversubscribed_over_sequential": round(wall["oversubscribed"] / wall["sequential"], 3),
        "threads": {n: [run["threads"] for run in v[0]["runs"]] for n, v in results.items()},
        "decode_s": {n: [round(run["decode_s"], 2) for run in v[0]["runs"]] for n, v in results.items()},
        "model": args.model, "n": args.n, "tokens": args.tokens, "batch_size": args.batch_size,
        "repeats": args.repeats, "usable_cores": usable_cores(), "cpu": cpu_model(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    for n in names:
        print(f"{n:<15} {wall[n]:7.2f} s  threads {out['threads'][n]}  decode {out['decode_s'][n]} s")
    print(f"concurrent / sequential = {out['concurrent_over_sequential']:.3f} (goal <= 1.0); "
          f"oversubscribed / sequential = {out['oversubscribed_over_sequential']:.3f}")


if __name__ == "__main__":
    main()
