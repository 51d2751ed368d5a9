"""Is a difference between two rows of a results table more than the test set's sampling noise?

Paired bootstrap resampling (Koehn, 2004): resample the test rows with replacement ``n_samples``
times, score every system on the same resamples, and report for each system its 95% confidence
interval and the p-value of its difference from a baseline system. Corpus BLEU is not a mean of
per-row scores, so it goes through sacrebleu's own implementation (``sacrebleu.significance``,
the one behind ``sacrebleu --paired-bs``); metrics that are means of per-row scores (Pass@1, exact
match) use the same procedure on the per-row scores, which numpy does in a few lines (sacrebleu's
test only takes its own metrics).

A system is ``{"prediction": [...], "reference": [...], "passed": [...]?}`` rows in the same order
for every system (the predictions files of the runs: ``docs/results/predictions/<part>/<variant>.jsonl``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from promptintern.evaluate.common import normalize_ws

SEED = 12345  # sacrebleu's default SACREBLEU_SEED: the same resamples as `sacrebleu --paired-bs`
SAMPLES = 1000


def row_scores(metric: str, rows: Sequence[dict]) -> np.ndarray:
    """Per-row scores (in %) whose mean is ``metric``: Pass@1 or exact match."""
    if metric == "pass@1":
        return np.array([100.0 * (r.get("exec_status") == "passed") for r in rows])
    if metric == "exact_match":
        return np.array([100.0 * (normalize_ws(r["prediction"]) == normalize_ws(r["reference"])) for r in rows])
    raise ValueError(f"{metric!r} is not a mean of per-row scores; allowed: pass@1, exact_match (bleu: paired_bleu)")


def _ci(samples: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% interval of the resampled scores (sacrebleu's estimate_ci)."""
    from sacrebleu.significance import estimate_ci

    mean, half = estimate_ci(np.asarray(samples, dtype=float))
    return float(mean), float(half)


def _p_value(system: np.ndarray, baseline: np.ndarray, observed: float) -> float:
    """sacrebleu's paired-bootstrap p-value: how often the centred resampled |difference| exceeds
    the observed one."""
    diffs = np.abs(system - baseline)
    return float((np.sum(diffs - diffs.mean() > observed) + 1) / (len(diffs) + 1))


def paired_rows(metric: str, systems: dict[str, Sequence[dict]], baseline: str,
                n_samples: int = SAMPLES, seed: int = SEED) -> dict[str, dict]:
    """Paired bootstrap of a per-row metric; every system against ``baseline``."""
    scores = {name: row_scores(metric, rows) for name, rows in systems.items()}
    n = _same_length(scores)
    idx = np.random.default_rng(seed).choice(n, size=(n_samples, n), replace=True)
    resampled = {name: s[idx].mean(axis=1) for name, s in scores.items()}
    out = {}
    for name, s in scores.items():
        mean, half = _ci(resampled[name])
        out[name] = {"score": float(s.mean()), "mean": mean, "ci": half,
                     "p_value": None if name == baseline else
                     _p_value(resampled[name], resampled[baseline], abs(s.mean() - scores[baseline].mean()))}
    return out


def paired_bleu(systems: dict[str, Sequence[dict]], baseline: str, n_samples: int = SAMPLES,
                tokenize: str = "13a") -> dict[str, dict]:
    """Paired bootstrap of corpus BLEU by sacrebleu (seed: SACREBLEU_SEED, default 12345)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    _same_length({name: rows for name, rows in systems.items()})
    names = [baseline] + [name for name in systems if name != baseline]
    references = [[r["reference"] for r in systems[baseline]]]
    for name in names:
        if [r["reference"] for r in systems[name]] != references[0]:
            raise ValueError(f"{name}: its rows are not the baseline's test rows in the same order")
    test = PairedTest([(name, [r["prediction"] for r in systems[name]]) for name in names],
                      {"BLEU": BLEU(tokenize=tokenize)}, references, test_type="bs", n_samples=n_samples)
    _, results = test()
    out = {}
    for name, result in zip(names, results["BLEU"]):
        out[name] = {"score": float(result.score), "mean": float(result.mean), "ci": float(result.ci),
                     "p_value": None if result.p_value is None else float(result.p_value)}
    return out


def paired_bootstrap(metric: str, systems: dict[str, Sequence[dict]], baseline: str,
                     n_samples: int = SAMPLES) -> dict:
    """Confidence intervals and p-values against ``baseline`` for the table's metric, with how
    they were made."""
    if baseline not in systems:
        raise ValueError(f"baseline {baseline!r} is not among the systems: {sorted(systems)}")
    if metric == "bleu":
        results = paired_bleu(systems, baseline, n_samples)
        how = "sacrebleu paired bootstrap (sacrebleu.significance.PairedTest, test_type bs)"
    else:
        results = paired_rows(metric, systems, baseline, n_samples)
        how = "paired bootstrap of the per-row scores (sacrebleu's procedure, numpy)"
    for name, rows in systems.items():  # the same answers: no difference to test (sacrebleu would say p ~0.001)
        if name != baseline and [r["prediction"] for r in rows] == [r["prediction"] for r in systems[baseline]]:
            results[name]["p_value"] = 1.0
    return {"metric": metric, "baseline": baseline, "n_samples": n_samples, "seed": SEED, "method": how,
            "rows": len(systems[baseline]), "systems": results}


def _same_length(systems: dict[str, Sequence]) -> int:
    lengths = {name: len(rows) for name, rows in systems.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"systems must be scored on the same rows; lengths: {lengths}")
    return next(iter(lengths.values()))


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m promptintern.significance BASELINE.jsonl OTHER.jsonl [...] [--metric bleu]``: any two
    or more published answer files compared on their common test rows (the tables compare against
    their own baseline row only; this compares any pair, e.g. two rows of different groups)."""
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m promptintern.significance", description=main.__doc__)
    ap.add_argument("files", nargs="+", type=Path, help="predictions .jsonl files; the first is the baseline")
    ap.add_argument("--metric", default="bleu", choices=("bleu", "pass@1", "exact_match"))
    ap.add_argument("--samples", type=int, default=SAMPLES)
    args = ap.parse_args(argv)
    if len(args.files) < 2:
        ap.error("give a baseline and at least one other predictions file")
    systems = {}
    for path in args.files:
        lines = path.read_text(encoding="utf-8").splitlines()
        systems[path.name.removesuffix(".jsonl")] = [json.loads(line) for line in lines if line.strip()]
    if len(systems) < len(args.files):
        ap.error("two files share a name: compare files with distinct names")
    result = paired_bootstrap(args.metric, systems, args.files[0].name.removesuffix(".jsonl"), args.samples)
    print(f"{result['metric']} on {result['rows']} rows, {result['n_samples']} resamples (seed {result['seed']}), "
          f"p against {result['baseline']}; {result['method']}")
    for name, s in result["systems"].items():
        p = "baseline" if s["p_value"] is None else f"p {s['p_value']:.3f}"
        print(f"  {name:<48} {s['score']:7.2f}  (95% CI +/- {s['ci']:.2f})  {p}")
    return result


if __name__ == "__main__":
    main()
