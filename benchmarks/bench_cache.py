"""Benchmark the DAG's cache: a first flow run against a second identical one, and what a change recomputes.

    python benchmarks/bench_cache.py                       # preset tiny, 3 repeats (~2 min on 2 cores)
    python benchmarks/bench_cache.py --preset cpu-demo --repeats 1 --set train_subset=8 \\
        --set eval.test_subset=4 --set eval.max_new_tokens=8

Runs the ``promptintern`` flow in this process on Prefect's embedded default (a temporary local
API) in a fresh ``PREFECT_HOME`` and a fresh artifact root per repeat, on the real NL2Bash split
under ``--data-dir`` with the preset's subsets (tiny: 24 shuffled train rows, the first 6 test
rows; the locally built random model). Per repeat:

1. cold     -- the first run: every box computes;
2. warm     -- the identical run again: the baseline the cache is measured against is the cold
               run; every cached box must come back ``Cached`` (0 recomputed);
3. late     -- ``eval.max_new_tokens`` changed: only the benchmarks may recompute;
4. mid      -- ``train.lr`` changed: training, merge and the fine-tuned model's benchmark recompute;
               data, templates, bank, shards and the base model's benchmark stay cached.

Task-run states are read back from the Prefect API (as ``tests/test_flow_e2e.py`` does). The
``report`` task is uncached by design (every run gets its own report folder and UI artifacts) and
is listed apart. The flow runs from a snapshot of the code (``git archive`` of --code, default
HEAD, or the working tree as it is at start): cache keys hash the library's source, so an edit
made in the checkout during the benchmark would otherwise read as a (correct) cache miss. Before the first repeat a no-op flow starts the embedded API, so its start-up
(7-13 s) is reported on its own and not charged to the cold run. Prints one JSON line, a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFECT_HOME = tempfile.mkdtemp(prefix="bench-cache-prefect-")
# Prefect reads its settings at import: a fresh home, offline, no server of the user's.
for name in ("PREFECT_API_URL", "PROMPTINTERN_LOCK_DIR"):
    os.environ.pop(name, None)
os.environ.update({"PREFECT_HOME": PREFECT_HOME, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "DO_NOT_TRACK": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
                   "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING")})
sys.path.insert(0, str(ROOT))

from benchmarks.common import hardware, loadavg, print_table  # noqa: E402

CODE_DIRS = ("promptintern", "tasks", "flows")


def snapshot_code(ref: str) -> tuple[Path, str]:
    """The flow's code frozen in a temporary folder (first on sys.path): ``git archive`` of
    ``ref``, or ``worktree`` for the checkout's files as they are now. Returns (folder, label)."""
    dest = Path(tempfile.mkdtemp(prefix="bench-cache-code-"))
    if ref == "worktree":
        for name in CODE_DIRS:
            shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", *CODE_DIRS], cwd=ROOT, capture_output=True, text=True).stdout
        label = f"worktree at {commit[:12]}" + (" + uncommitted edits" if dirty.strip() else "")
    else:
        archive = subprocess.run(["git", "archive", ref, *CODE_DIRS], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        label = f"{ref} = {commit.strip()[:12]}"
    sys.path.insert(0, str(dest))
    return dest, label

UNCACHED = {"report"}


def run_flow(cfg, root: Path) -> tuple[float, dict[str, list[str]]]:
    """Seconds of one in-process flow run, and its task states as the end-to-end test reads them
    from the API (``tests/test_flow_e2e.py``: they arrive a moment after the flow returns)."""
    from flows.dag import promptintern
    from tests.test_flow_e2e import _task_states as task_states

    t0 = time.perf_counter()
    state = promptintern(config=cfg, artifact_root=str(root), return_state=True)
    seconds = time.perf_counter() - t0
    state.result()  # raises if the run failed
    return seconds, task_states(state.state_details.flow_run_id)


def recomputed(states: dict[str, list[str]]) -> dict[str, int]:
    """Cached boxes that ran their body (any final state but Cached), name -> count."""
    out = {name: sum(s != "Cached" for s in names) for name, names in states.items() if name not in UNCACHED}
    return {name: n for name, n in sorted(out.items()) if n}


def start_api() -> float:
    from prefect import flow

    @flow(name="bench-cache-warmup")
    def warmup() -> int:
        return 0

    t0 = time.perf_counter()
    warmup()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data", help="holds nl2bash/split/*.jsonl")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh artifact roots, each cold/warm/late/mid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--code", default="HEAD", help="git ref to snapshot, or 'worktree'")
    args = ap.parse_args()

    code_dir, code_label = snapshot_code(args.code)
    import promptintern

    assert Path(promptintern.__file__).is_relative_to(code_dir), promptintern.__file__
    from flows.dag import _parse_set
    from promptintern.config import preset

    overrides = {"data_dir": str(args.data_dir.resolve()), "seed": args.seed, **_parse_set(args.set)}
    cfg = preset(args.preset, overrides)
    late = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_new_tokens": cfg.eval.max_new_tokens + 4})})
    mid = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": cfg.train.lr * 0.5})})
    load_start = loadavg()
    api_start_s = start_api()

    runs, roots = [], []
    for r in range(args.repeats):
        root = Path(tempfile.mkdtemp(prefix=f"bench-cache-artifacts-{r}-"))
        roots.append(root)
        row = {}
        for name, config in (("cold", cfg), ("warm", cfg), ("late", late), ("mid", mid)):
            seconds, states = run_flow(config, root)
            row[name] = {"seconds": round(seconds, 3), "recomputed": recomputed(states),
                         "tasks": sum(len(v) for k, v in states.items() if k not in UNCACHED),
                         "states": states}
        row["warm_over_cold"] = round(row["warm"]["seconds"] / row["cold"]["seconds"], 4)
        runs.append(row)
        print(f"repeat {r + 1}/{args.repeats}: cold {row['cold']['seconds']:.2f} s, warm {row['warm']['seconds']:.2f} s, "
              f"late {row['late']['seconds']:.2f} s, mid {row['mid']['seconds']:.2f} s", file=sys.stderr)

    med = {name: round(statistics.median(r[name]["seconds"] for r in runs), 3) for name in ("cold", "warm", "late", "mid")}
    last = runs[-1]
    warm_recomputed = max(sum(r["warm"]["recomputed"].values()) for r in runs)
    expect_late = {"benchmark"}
    expect_mid = {"train-stage", "merge-adapter", "benchmark"}
    result = {
        "bench": "cache", "preset": args.preset, "overrides": overrides, "seed": args.seed,
        "data": f"{args.data_dir}/nl2bash/split (train_subset={cfg.train_subset}, "
                f"test_subset={cfg.eval.test_subset})",
        "code": code_label, "model": cfg.model, "stages": cfg.schedule.num_stages, "repeats": args.repeats,
        "prefect_home": "fresh temporary dir", "api_start_s": round(api_start_s, 3),
        "cold_s_median": med["cold"], "warm_s_median": med["warm"],
        "warm_over_cold_median": round(statistics.median(r["warm_over_cold"] for r in runs), 4),
        "cold_over_warm_median": round(statistics.median(1 / r["warm_over_cold"] for r in runs), 1),
        "cached_tasks": last["warm"]["tasks"], "warm_recomputed_max": warm_recomputed,
        "late_change": "eval.max_new_tokens", "late_s_median": med["late"],
        "late_recomputed": last["late"]["recomputed"], "late_only_downstream": all(
            set(r["late"]["recomputed"]) <= expect_late for r in runs),
        "mid_change": "train.lr", "mid_s_median": med["mid"], "mid_recomputed": last["mid"]["recomputed"],
        "mid_only_downstream": all(set(r["mid"]["recomputed"]) <= expect_mid and r["mid"]["recomputed"].get("benchmark") == 1
                                   for r in runs),
        "runs_s": [{k: r[k]["seconds"] for k in ("cold", "warm", "late", "mid")} for r in runs],
        "states_last_repeat": {k: last[k]["states"] for k in ("cold", "warm", "late", "mid")},
        "load_avg_start": load_start, "load_avg_end": loadavg(),
        "hardware": hardware("prefect", "torch", "transformers", "peft", "tokenizers", "pyarrow"),
    }
    print(json.dumps(result))
    for folder in (code_dir, *roots):
        shutil.rmtree(folder, ignore_errors=True)

    def listing(rec: dict[str, int]) -> str:
        return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in rec.items()) or "none"

    print_table(["run", "median s", "vs cold", "recomputed boxes (of %d cached)" % last["warm"]["tasks"]], [
        ["cold (first run)", f"{med['cold']:.2f}", "1.00", listing(last["cold"]["recomputed"])],
        ["warm (identical)", f"{med['warm']:.2f}", f"{med['warm'] / med['cold']:.3f}", listing(last["warm"]["recomputed"])],
        ["eval.max_new_tokens changed", f"{med['late']:.2f}", f"{med['late'] / med['cold']:.3f}",
         listing(last["late"]["recomputed"])],
        ["train.lr changed", f"{med['mid']:.2f}", f"{med['mid'] / med['cold']:.3f}", listing(last["mid"]["recomputed"])],
    ])
    print(f"embedded API start-up {api_start_s:.1f} s (not in the runs); report is uncached by design; "
          f"load {load_start} -> {result['load_avg_end']}; {result['hardware']['cpu']}, {result['hardware']['cores']} cores")
    failed = [goal for goal, ok in (("0 recomputed on the identical run", warm_recomputed == 0),
                                    ("late change recomputes only benchmarks", result["late_only_downstream"]),
                                    ("mid change recomputes only downstream", result["mid_only_downstream"])) if not ok]
    if failed:
        sys.exit("missed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
