"""Where internalization pays: the metric against the number of training rows.

The ``map-<rows>`` parts of ``promptintern.results`` run the same variants (fine-tuning on the query
alone, on the full prompt, PromptIntern and the curricula added to ``MAP_VARIANTS``) at 16, 64, 256
and 1,024 NL2Bash training rows, every variant at equal optimizer steps within a size. This module
turns their records into one table (a row per variant, a column per size: the mean over training
seeds, their spread, the test noise) and one plot of the metric against training rows.

    python -m flows.reproduce map-16 map-64 --extra-seeds 1     # run two sizes, two seeds each
    python -m flows.reproduce map --render-only                 # the combined table and plot
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

from promptintern.report import save_plot
from promptintern.results import MAP_SIZES, seed_scores


def map_points(records: dict[int, dict]) -> list[dict]:
    """One point per (variant, size) that ran: mean over seeds, every seed's score, and the 95%
    bootstrap half-width of the main run (the test set's noise)."""
    points = []
    for rows, record in sorted(records.items()):
        systems = (record.get("significance") or {}).get("systems", {})
        for variant, run in record["runs"].items():
            if not run.get("tuned"):
                continue
            scores = [score for _, score in seed_scores(run)]
            points.append({"variant": variant, "rows": rows, "metric": run["tuned"]["metric"],
                           "mean": statistics.mean(scores), "scores": scores,
                           "sd": statistics.stdev(scores) if len(scores) > 1 else None,
                           "ci": systems.get(variant, {}).get("ci"),
                           "p_value": systems.get(variant, {}).get("p_value")})
    return points


def map_markdown(points: Sequence[dict], sizes: Sequence[int] = MAP_SIZES) -> str:
    """The map as a table: a row per variant, a column per training-set size; each cell the mean
    over seeds, the per-seed scores, and the main run's interval and p-value against the baseline."""
    variants = list(dict.fromkeys(p["variant"] for p in points))
    at = {(p["variant"], p["rows"]): p for p in points}
    metric = points[0]["metric"] if points else "metric"
    lines = ["| variant | " + " | ".join(f"{n} rows" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for variant in variants:
        cells = []
        for n in sizes:
            p = at.get((variant, n))
            if p is None:
                cells.append("not run")
                continue
            cell = f"**{p['mean']:.2f}**"
            if len(p["scores"]) > 1:
                cell += f" ({' / '.join(f'{v:.2f}' for v in p['scores'])}; sd {p['sd']:.2f})"
            if p["ci"] is not None:
                cell += f" ± {p['ci']:.2f}"
            if p["p_value"] is not None:
                cell += f", p {p['p_value']:.3f}"
            cells.append(cell)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\nCells: mean {metric} over training seeds (each seed's score; their sd), ± the "
                               f"95% paired-bootstrap half-width of the main run on the test rows, p: that run "
                               f"against the part's baseline (direct-no-template) on the same rows.")


def plot_metric_vs_rows(points: Sequence[dict], path: Path, title: str) -> Path:
    """The metric against training rows (log x), a line per variant through the seed means, each
    seed a small dot, the main run's 95% bootstrap interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8.5, 5), dpi=120)
    variants = list(dict.fromkeys(p["variant"] for p in points))
    for i, variant in enumerate(variants):
        mine = sorted((p for p in points if p["variant"] == variant), key=lambda p: p["rows"])
        shift = 1.0 + 0.03 * (i - (len(variants) - 1) / 2)  # side by side, bars apart
        xs = [p["rows"] * shift for p in mine]
        line = ax.errorbar(xs, [p["mean"] for p in mine], yerr=[p["ci"] or 0.0 for p in mine], fmt="-o",
                           capsize=3, markersize=5, label=variant)
        for x, p in zip(xs, mine):
            ax.scatter([x] * len(p["scores"]), p["scores"], s=9, color=line[0].get_color(), alpha=0.5)
    sizes = sorted({p["rows"] for p in points}) or list(MAP_SIZES)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training rows (log scale)")
    ax.set_ylabel(points[0]["metric"] if points else "metric")
    ax.set_title(title + " · line: mean over training seeds, dots: seeds, bars: 95% bootstrap", fontsize=9)
    return save_plot(fig, ax, path, legend=bool(variants))
