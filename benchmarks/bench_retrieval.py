"""Benchmark the retrieval bank on the full NL2Bash train split.

Measures: the full BLEU bank (median of --repeats builds), the BM25 bank, peak RSS, speed
against sacrebleu's sentence_bleu a pair, exactness of the score matrix on a sample of pairs,
and top-k agreement with a brute-force sacrebleu top-k over the full pool on a sample of
queries (must be 100%). Prints one JSON line, then a short table.

Data: ``<data-dir>/nl2bash/split/train.jsonl``, every row (8,090: the bank is 8,090 x 8,090,
self excluded). Baseline: sacrebleu's ``BLEU(effective_order=True).sentence_score`` (what
``sacrebleu.sentence_bleu`` computes, with the metric object built once, not per call: the
baseline's fastest form) on a seeded sample of pairs. Goals: full bank <= --goal-s seconds on the
machine's cores, top-k agreement 100%; the script exits non-zero when either is missed.

    python benchmarks/bench_retrieval.py --data-dir data          # or ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import promptintern.retrieve as retrieve  # noqa: E402
from benchmarks.common import hardware, loadavg, timed  # noqa: E402


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB (Linux)."""
    current = 0.0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def brute_force_topk(metric, query: str, pool: list[str], k: int, self_index: int) -> list[int]:
    """sacrebleu top-k of one query; scores rounded to 1e-9 so true ties (which sacrebleu's floats
    split in the last bits) go to the lower index, as in the vectorized bank."""
    scores = [round(metric.sentence_score(c, [query]).score, 9) for c in pool]
    scores[self_index] = -1.0
    return sorted(range(len(pool)), key=lambda j: (-scores[j], j))[:k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="folder holding nl2bash/split/train.jsonl")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="full BLEU bank builds (median reported)")
    ap.add_argument("--sample-pairs", type=int, default=3000, help="pairs scored by sacrebleu for speed/exactness")
    ap.add_argument("--agree-queries", type=int, default=20, help="queries checked against brute-force top-k")
    ap.add_argument("--block-size", type=int, default=retrieve.DEFAULT_BLOCK_SIZE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--goal-s", type=float, default=15.0, help="goal for the full BLEU bank (median)")
    args = ap.parse_args()
    load_start = loadavg()

    from sacrebleu.metrics import BLEU
    from sacrebleu import __version__ as sacrebleu_version

    train = args.data_dir / "nl2bash" / "split" / "train.jsonl"
    queries = [json.loads(line)["nl"] for line in train.open()]
    n = len(queries)
    rss_before, _ = rss_mb()

    bank, bleu_times = timed(lambda: retrieve.build_bank(queries, args.k, block_size=args.block_size), args.repeats)
    _, peak_after_bleu = rss_mb()
    bm25_bank, bm25_times = timed(lambda: retrieve.build_bank(queries, args.k, scorer="bm25"), 1)

    # sacrebleu a pair: sentence_bleu's computation, metric object reused (its fastest form)
    rng = random.Random(args.seed)
    side = max(1, int(round(args.sample_pairs ** 0.5)))
    sample_q, sample_c = rng.sample(queries, side), rng.sample(queries, side)
    metric = BLEU(effective_order=True)
    t0 = time.perf_counter()
    ref = np.array([[metric.sentence_score(c, [q]).score for c in sample_c] for q in sample_q])
    sacre_us = (time.perf_counter() - t0) / ref.size * 1e6
    max_abs_diff = float(np.abs(retrieve.bleu_score_matrix(sample_q, sample_c) - ref).max())

    bleu_median = statistics.median(bleu_times)
    ours_us = bleu_median / (n * n) * 1e6
    checked = sorted(rng.sample(range(n), min(args.agree_queries, n)))
    agree = sum(brute_force_topk(metric, queries[i], queries, args.k, i) == bank.neighbors[i].tolist()
                for i in checked)

    goals = {"bleu_bank_within_goal": bleu_median <= args.goal_s, "topk_agreement_100": agree == len(checked)}
    result = {
        "bench": "retrieval", "data": str(train), "subset": "all train rows", "seed": args.seed,
        "n": n, "k": args.k, "block_size": args.block_size, "cpus": os.cpu_count(),
        "load_avg_start": load_start, "load_avg_1m": loadavg(), "goal_s": args.goal_s, **goals,
        "bleu_bank_s_median": round(bleu_median, 3), "bleu_bank_s_all": [round(t, 3) for t in bleu_times],
        "bm25_bank_s": round(bm25_times[0], 3),
        "rss_before_mb": round(rss_before, 1), "peak_rss_after_bleu_mb": round(peak_after_bleu, 1),
        "sacrebleu_us_per_pair": round(sacre_us, 2), "ours_us_per_pair": round(ours_us, 4),
        "speedup_vs_sacrebleu": round(sacre_us / ours_us, 1),
        "sacrebleu_full_bank_est_s": round(sacre_us * n * n / 1e6, 1),
        "matrix_pairs_checked": int(ref.size), "matrix_max_abs_diff": max_abs_diff,
        "topk_queries_checked": len(checked), "topk_agreement": agree / len(checked),
        "bm25_vs_bleu_top1_agreement": float((bm25_bank.neighbors[:, 0] == bank.neighbors[:, 0]).mean()),
        "sacrebleu": sacrebleu_version, "numpy": np.__version__,
        "hardware": hardware("numpy", "scipy", "sacrebleu", "rank-bm25"),
    }
    print(json.dumps(result))
    rows = [
        ("full BLEU bank (median)", f"{bleu_median:.2f} s   ({n} x {n}, k={args.k}; goal <= {args.goal_s:g} s: "
                                    f"{'met' if goals['bleu_bank_within_goal'] else 'MISSED'})"),
        ("BM25 bank", f"{bm25_times[0]:.2f} s"),
        ("peak RSS", f"{peak_after_bleu:.0f} MB   (before: {rss_before:.0f} MB)"),
        ("sacrebleu a pair", f"{sacre_us:.1f} us   (full bank ~{sacre_us * n * n / 3600e6:.1f} h)"),
        ("vectorized a pair", f"{ours_us * 1000:.1f} ns   ({sacre_us / ours_us:,.0f}x)"),
        ("matrix vs sacrebleu", f"max |diff| {max_abs_diff:.1e} on {ref.size} pairs"),
        ("top-k agreement", f"{agree}/{len(checked)} queries vs brute-force sacrebleu"),
        ("machine", f"{result['hardware']['cpu']}, {result['hardware']['cores']} cores, "
                    f"load {load_start} -> {result['load_avg_1m']}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if agree != len(checked):
        sys.exit("top-k disagrees with brute-force sacrebleu")
    if not goals["bleu_bank_within_goal"]:
        sys.exit(f"full BLEU bank took {bleu_median:.2f} s, above the {args.goal_s:g} s goal")


if __name__ == "__main__":
    main()
