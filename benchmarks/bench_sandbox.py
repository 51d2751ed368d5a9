"""Sandboxed code evaluation: MBPP / HumanEval Pass@1 sanity checks, throughput and the hostile table.

    python benchmarks/bench_sandbox.py                        # every available mode, 2 workers
    python benchmarks/bench_sandbox.py --modes namespaces --skip-hostile

Per available mode: the MBPP test split (task_id 11-510) scored with the dataset's own ``code``
(expect 100%, minus tasks whose own tests are broken, listed by id) and with an empty function
(expect 0%), HumanEval's canonical solutions (expect 100%), programs/s for each, and the hostile
programs of tests/test_sandbox_hostile.py (outcome per program). Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from promptintern.datasets.mbpp import load_split  # noqa: E402
from promptintern.evaluate.execution import (  # noqa: E402
    empty_function, judge, mbpp_pass_at_1, mbpp_reference_check)
from promptintern.sandbox import MODES, Sandbox, available_modes  # noqa: E402


def hostile_table(mode: str) -> dict[str, str]:
    """Outcome of each hostile program of tests/test_sandbox_hostile.py, with the same targets:
    a listener on 127.0.0.1, a decoy $HOME, the host's PID 1 and this process's environment."""
    import shutil

    spec = importlib.util.spec_from_file_location("hostile", ROOT / "tests" / "test_sandbox_hostile.py")
    hostile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hostile)
    out = {}
    decoy = hostile.make_decoy_home()
    try:
        with Sandbox(mode=mode, **hostile.LIMITS) as sb, hostile.Listener() as listener:
            for name in hostile.HOSTILE:
                source, plans, nonce = hostile.hostile_source(name, listener.port, decoy, "bench-daemon")
                verdict = judge(sb.run(source), plans, nonce)
                out[name] = verdict.status
                out[f"{name} detail"] = verdict.detail[:160]
            out["127.0.0.1 connections seen"] = str(len(listener.seen))
            out["decoy $HOME intact"] = str(decoy.is_dir() and (decoy / "notes.txt").is_file())
    finally:
        shutil.rmtree(decoy, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--modes", nargs="*", default=list(MODES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--skip-hostile", action="store_true")
    args = parser.parse_args()

    examples = load_split(Path(args.data_dir), "test")
    try:
        from promptintern.evaluate.humaneval import canonical_check, load_problems
        problems = load_problems()
    except ImportError:
        problems = None
    report = {"bench": "sandbox", "host": platform.node(), "cpus": os.cpu_count(), "workers": args.workers,
              "load_avg_start": os.getloadavg()[0], "modes": {}}
    for mode, (ok, why) in available_modes().items():
        if mode not in args.modes:
            continue
        if not ok:
            report["modes"][mode] = {"available": False, "why": why}
            continue
        row: dict = {"available": True}
        with Sandbox(mode=mode, workers=args.workers, timeout_s=args.timeout) as sb:
            ref = mbpp_reference_check(examples, sb)
            empty = mbpp_pass_at_1(examples, [empty_function(ex) for ex in examples], sb)
            row["mbpp_reference"] = {k: ref[k] for k in ("pass@1", "n", "statuses", "programs_per_s", "failed_ids")}
            row["mbpp_reference"]["failed"] = [t for t in ref["per_task"] if t["status"] != "passed"]
            row["mbpp_empty"] = {k: empty[k] for k in ("pass@1", "n", "statuses", "programs_per_s")}
            row["mbpp_empty"]["passed_ids"] = [t["id"] for t in empty["per_task"] if t["status"] == "passed"]
            if problems is not None:
                he = canonical_check(problems, sb)
                row["humaneval_canonical"] = {k: he[k] for k in ("pass@1", "n", "statuses", "programs_per_s",
                                                                  "failed_ids")}
        if not args.skip_hostile:
            start = time.monotonic()
            row["hostile"] = hostile_table(mode)
            row["hostile_seconds"] = round(time.monotonic() - start, 1)
        report["modes"][mode] = row
    report["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(report))

    print(f"\n{'mode':11s} {'MBPP ref':>9s} {'empty':>6s} {'HumanEval':>9s} {'prog/s ref':>10s} {'prog/s empty':>12s}")
    for mode, row in report["modes"].items():
        if not row["available"]:
            print(f"{mode:11s} unavailable: {row['why']}")
            continue
        he = row.get("humaneval_canonical", {})
        print(f"{mode:11s} {row['mbpp_reference']['pass@1']:8.1f}% {row['mbpp_empty']['pass@1']:5.1f}% "
              f"{he.get('pass@1', float('nan')):8.1f}% {row['mbpp_reference']['programs_per_s']:10.1f} "
              f"{row['mbpp_empty']['programs_per_s']:12.1f}")
    tables = {m: r["hostile"] for m, r in report["modes"].items() if r.get("hostile")}
    if tables:
        print(f"\n{'hostile program':18s} " + " ".join(f"{m:>10s}" for m in tables))
        for name in [n for n in next(iter(tables.values())) if not n.endswith(" detail")]:
            print(f"{name:18s} " + " ".join(f"{tables[m][name]:>10s}" for m in tables))


if __name__ == "__main__":
    main()
