"""Generation wall time of a reproduced part's benchmark boxes, before and after issue 17.

Every row of docs/results.md is a benchmark box that generates for its test rows (300 on NL2Bash)
with its own model and prompt form; generation is most of a benchmark box's time. This times each
box of one part on its own model and prompts, the two ways the box has generated:

* **before**: HF ``model.generate`` on left-padded static batches, the template recomputed for
  every batch (``engine="hf"``, ``prefix_cache`` off: the benchmark box until issue 17);
* **after**: ``promptintern.decode``'s loop, continuous batching and the template prefilled once
  (the defaults now: ``eval.prefix_cache`` on).

on the box's first ``--rows`` test rows, ``--repeats`` rounds in alternating order (medians), and
scales each box's seconds per instance to the rows it scored: the part's generation wall time,
before and after, and the answers compared (they must be the same).

    python benchmarks/bench_reproduce_generation.py map-64 --rows 48       # needs the part's models

Reads docs/results/<part>.json (which runs, ``--record`` to point elsewhere) and the artifact root
those runs were made in (``--artifact-root``, default artifacts/).
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

from bench_train import cpu_flags, cpu_model
from promptintern.cpu import set_torch_threads
from promptintern.generate import generate
from promptintern.results import models_of, timing_jobs

WAYS = {"before": {"engine": "hf", "prefix_cache": False}, "after": {"engine": "loop", "prefix_cache": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", help="a part of promptintern.results.PARTS whose runs are under --artifact-root")
    ap.add_argument("--artifact-root", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--record", type=Path, default=None, help="default docs/results/<part>.json")
    ap.add_argument("--rows", type=int, default=48, help="first N test rows of every box")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    threads = set_torch_threads()
    record = args.record or ROOT / "docs" / "results" / f"{args.part}.json"
    evals, forms, missing = models_of(args.part, json.loads(record.read_text())["runs"], args.artifact_root)
    if not evals:
        sys.exit(f"no completed run of {args.part} has its models under {args.artifact_root} (missing: {missing})")
    jobs = timing_jobs(args.artifact_root, evals, args.rows)
    load_start = os.getloadavg()[0]
    seconds: dict[tuple[str, str], list[float]] = {(n, w): [] for n in jobs for w in WAYS}
    texts: dict[tuple[str, str], list[str]] = {}
    for r in range(args.repeats):
        for name, job in jobs.items():
            kwargs = {k: v for k, v in job.items() if k not in ("template", "test_rows", "prefix_cache")}
            for way in (list(WAYS) if r % 2 == 0 else list(WAYS)[::-1]):
                gens = generate(progress=False, **kwargs, **WAYS[way])
                seconds[(name, way)].append(gens.seconds_per_instance)
                texts[(name, way)] = gens.texts
                print(f"# {name} {way}: {gens.seconds_per_instance:.3f} s/instance", file=sys.stderr)
    boxes = {}
    for name, job in jobs.items():
        per = {way: statistics.median(seconds[(name, way)]) for way in WAYS}
        same = sum(a == b for a, b in zip(texts[(name, "before")], texts[(name, "after")]))
        boxes[name] = {"prompt": forms[name], "test_rows": job["test_rows"], "template": job["template"],
                       "s_per_instance": {w: round(v, 4) for w, v in per.items()},
                       "box_seconds": {w: round(v * job["test_rows"], 1) for w, v in per.items()},
                       "speedup": round(per["before"] / per["after"], 2),
                       "answers_identical": f"{same}/{len(texts[(name, 'after')])}",
                       "all": {w: [round(x, 4) for x in seconds[(name, w)]] for w in WAYS}}
    total = {w: round(sum(b["box_seconds"][w] for b in boxes.values()), 1) for w in WAYS}
    result = {"bench": "reproduce_generation", "part": args.part, "boxes": boxes, "total_seconds": total,
              "speedup": round(total["before"] / total["after"], 2), "rows_timed": args.rows,
              "repeats": args.repeats, "not_timed": missing, "record": str(record),
              "load_avg_1m": f"{load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
              "cpu": cpu_model(), "cpu_flags_avx512_amx": cpu_flags(), "cpus": os.cpu_count(),
              "torch_threads": threads, "torch": torch.__version__}
    print(json.dumps(result))
    print(f"{args.part}: generation of its {len(boxes)} benchmark boxes, scaled from their first {args.rows} rows")
    for name, b in boxes.items():
        print(f"{name:<40} {b['prompt']:<26} {b['s_per_instance']['before']:6.3f} -> {b['s_per_instance']['after']:6.3f} "
              f"s/instance  {b['speedup']:5.2f}x  x {b['test_rows']} rows  answers identical {b['answers_identical']}")
    print(f"total {total['before'] / 60:.1f} min before -> {total['after'] / 60:.1f} min after = {result['speedup']:.2f}x")


if __name__ == "__main__":
    main()
