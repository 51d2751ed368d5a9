"""Results tables: one row per evaluated prompt form, as Markdown and CSV.

Columns follow the paper: the task metric(s), input tokens per query, compression ratio against
the full prompt, seconds per instance. Each table ends with how its numbers were made.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Sequence

from promptintern.cost import cost_saved

COLUMNS = ("method", "prompt form", "metric", "exact match", "NLC2CMD", "input tokens / query",
           "vs full prompt", "s / instance", "USD / 1K queries", "cost saved")


def rows_from_metrics(metrics: Sequence[dict], full_prompt_label: str | None = None,
                      price_model: str = "gpt-4") -> list[dict]:
    """One table row per benchmark; ratios and savings are against ``full_prompt_label``.

    The cost column prices each method's prompts at ``price_model``'s list price (see
    ``promptintern/prices.json``); "cost saved" is the paper's 100 * (1 - ours / full).
    """
    by_label = {m["label"]: m for m in metrics}
    full = by_label.get(full_prompt_label) if full_prompt_label else None
    rows = []
    for m in metrics:
        main = m.get(m["metric"], float("nan"))
        ratio = (m["input_tokens_per_query"] / full["input_tokens_per_query"]) if full else float("nan")
        cost = m.get("cost", {}).get("cost_per_1k_queries", {}).get(price_model)
        full_cost = full.get("cost", {}).get("cost_per_1k_queries", {}).get(price_model) if full else None
        rows.append({
            "method": m["label"],
            "prompt form": m.get("prompt_form", ""),
            "metric": f"{m['metric']} {main:.2f}",
            "exact match": f"{m.get('exact_match', float('nan')):.2f}",
            "NLC2CMD": f"{m['nlc2cmd']:.3f}" if "nlc2cmd" in m else "",
            "input tokens / query": f"{m['input_tokens_per_query']:.1f}",
            "vs full prompt": f"{ratio:.3f}x" if full else "",
            "s / instance": f"{m['seconds_per_instance']:.3f}",
            "USD / 1K queries": f"{cost:.3f} ({price_model})" if cost is not None else "",
            "cost saved": f"{cost_saved(full_cost, cost):.1f}%" if cost is not None and full_cost else "",
        })
    return rows


def markdown_table(rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def csv_table(rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def provenance_lines(provenance: dict) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in provenance.items())


def prompt_form(tau: float, k: int) -> str:
    """How a prompt form reads in a table: 'query only', 'template x0.3 + 2-shot', ..."""
    if tau == 0.0 and k == 0:
        return "query only"
    template = "full template" if tau == 1.0 else ("no template" if tau == 0.0 else f"template x{tau:g}")
    return f"{template} + {k}-shot" if k else template


def write_run_report(root: Path, cfg, eval_dirs: dict[str, str], stage_dirs: Sequence[str],
                     template_dirs: dict[float, str | None]) -> dict:
    """One run's results table and provenance, written to ``<root>/runs/<time>-<config hash>/``.

    ``eval_dirs`` maps a method label ("promptintern", "base-full-prompt") to its benchmark folder;
    every path is relative to ``root``. Returns the rows, the metrics and the Markdown.
    """
    from promptintern.artifacts import stable_hash

    template_rate = {"promptintern": cfg.schedule.inference_stage().tau, "base-full-prompt": 1.0}
    metrics = []
    for label, rel in eval_dirs.items():
        m = json.loads((root / rel / "metrics.json").read_text())
        m["prompt_form"] = prompt_form(template_rate[label], m["k"])
        metrics.append(m)
    full = "base-full-prompt" if "base-full-prompt" in eval_dirs else None
    rows = rows_from_metrics(metrics, full_prompt_label=full, price_model=cfg.eval.price_model)
    stages = [json.loads((root / rel / "stats.json").read_text()) for rel in stage_dirs]
    templates = {tau: json.loads((root / rel / "stats.json").read_text())
                 for tau, rel in template_dirs.items() if rel}
    first = metrics[0]
    provenance = {
        "model": cfg.model,
        "dataset": f"{cfg.dataset} (train rows {first['dataset']['train_rows']}, "
                   f"{cfg.eval.test_split} rows {first['dataset']['test_rows']})",
        "schedule": ", ".join(f"t{s.stage}: tau {s.tau:g} k {s.k}" for s in cfg.schedule.stages()),
        "compressor": cfg.compression.method,
        "seed": cfg.seed,
        "decoding": f"greedy, max_new_tokens {cfg.eval.max_new_tokens}, batch {cfg.eval.batch_size}",
        "bleu": next((m["sacrebleu_signature"] for m in metrics if "sacrebleu_signature" in m), "n/a"),
        "execution": next((f"sandbox {m['sandbox']['mode']}, {m['sandbox']['workers']} workers, "
                           f"{m['sandbox']['timeout_s']} s per program" for m in metrics if "sandbox" in m), "n/a"),
        "cost": f"{cfg.eval.price_model} list prices of {first['cost']['prices_date']}, tokens counted "
                f"with {first['cost']['tokenizer']}",
        "training": "; ".join(f"stage {s['stage']}: {s['optimizer_steps']} steps, loss {s['first_loss']:.3f}"
                              f" -> {s['final_loss']:.3f}, {s['tokens_per_second']:.0f} tok/s" for s in stages),
        "template rates achieved": ", ".join(f"tau {t:g}: {v['rate_achieved']:.3f} ({v['tokens_after']} tokens)"
                                             for t, v in templates.items()),
    }
    run_dir = root / "runs" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{stable_hash(cfg, 8)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    md = f"{markdown_table(rows)}\n\nHow these numbers were made:\n{provenance_lines(provenance)}\n"
    (run_dir / "results.md").write_text(md)
    (run_dir / "results.csv").write_text(csv_table(rows))
    (run_dir / "results.json").write_text(json.dumps({"rows": rows, "metrics": metrics, "provenance": provenance,
                                                      "stages": stages, "eval_dirs": dict(eval_dirs),
                                                      "stage_dirs": list(stage_dirs)}, indent=2))
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    return {"run_dir": str(run_dir), "rows": rows, "markdown": md, "metrics": metrics}


# ---------------------------------------------------------------------------------------------
# Machine-readable rows (Prefect table artifacts) and the sweep's comparison of variants
# ---------------------------------------------------------------------------------------------


def summary_rows(metrics: Sequence[dict], variant: str | None = None) -> list[dict]:
    """One numeric row per benchmark: what a UI table shows and what a sweep compares."""
    return [{
        "variant": variant or "",
        "method": m["label"],
        "prompt form": m.get("prompt_form", ""),
        "metric": m["metric"],
        "value": round(float(m[m["metric"]]), 4),
        "exact match": round(float(m.get("exact_match", float("nan"))), 4),
        "input tokens / query": round(float(m["input_tokens_per_query"]), 2),
        "s / instance": round(float(m["seconds_per_instance"]), 4),
        "test rows": m.get("n"),
        "scoring": scoring(m),
    } for m in metrics]


def scoring(m: dict) -> str:
    """How a benchmark's main number was scored, for the provenance of tables built from rows."""
    if "sacrebleu_signature" in m:
        return f"sacrebleu {m['sacrebleu_signature']}"
    if "sandbox" in m:
        return f"pass@1, greedy, sandbox {m['sandbox']['mode']}"
    return f"{m['metric']}, greedy"


def variant_group(name: str) -> str:
    """The paper's table a variant belongs to."""
    if name.startswith("promptintern"):
        return "PromptIntern"
    if name.startswith(("no-", "schedule-", "bank-")):
        return "ablation"
    if name.startswith("direct-"):
        return "direct fine-tuning"
    return "prompt compression"


SWEEP_COLUMNS = ("group", "variant", "prompt form", "metric", "input tokens / query",
                 "fewer tokens than full prompt", "s / instance", "speed-up vs full prompt", "status")


def comparison_rows(runs: Sequence[dict]) -> list[dict]:
    """The sweep's table (the layout of the paper's Tables 1-6): one row per variant.

    ``runs``: ``{"variant", "status", "rows": summary_rows(...) or [], "reason": str}``. The
    fine-tuned model's row of each run is the variant's; the first run that also benchmarked the
    base model with the full prompt gives the reference row that ratios are taken against.
    """
    baselines = [r for run in runs for r in run.get("rows", []) if r["method"] == "base-full-prompt"]
    # the fullest prompt any run benchmarked (a variant without shots benchmarks the template alone)
    reference = max(baselines, key=lambda r: r["input tokens / query"], default=None)
    table = []
    if reference is not None:
        table.append(_comparison_row("reference", "base model, full prompt", reference, reference, "reference"))
    for run in runs:
        tuned = next((r for r in run.get("rows", []) if r["method"] == "promptintern"), None)
        if tuned is None:
            table.append({"group": variant_group(run["variant"]), "variant": run["variant"],
                          "status": f"{run['status']}: {run.get('reason', '')}".strip(": ")})
        else:
            table.append(_comparison_row(variant_group(run["variant"]), run["variant"], tuned, reference, run["status"]))
    return table


def _comparison_row(group: str, variant: str, row: dict, reference: dict | None, status: str) -> dict:
    tokens, seconds = row["input tokens / query"], row["s / instance"]
    return {
        "group": group,
        "variant": variant,
        "prompt form": row["prompt form"],
        "metric": f"{row['metric']} {row['value']:.2f}",
        "value": row["value"],
        "input tokens / query": tokens,
        "fewer tokens than full prompt": f"{reference['input tokens / query'] / tokens:.1f}x" if reference and tokens else "",
        "s / instance": seconds,
        "speed-up vs full prompt": f"{reference['s / instance'] / seconds:.2f}x" if reference and seconds else "",
        "status": status,
    }


def plot_metric_vs_tokens(table: Sequence[dict], path: Path, title: str) -> Path:
    """Scatter of the task metric against input tokens per query (log x), one labelled point per
    variant, as a PNG at ``path``; a row with a ``ci`` (half-width of its 95% interval) gets an
    error bar. Rows without a measured value (skipped, failed) are left out."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    points = [r for r in table if isinstance(r.get("value"), (int, float)) and r.get("input tokens / query")]
    fig, ax = plt.subplots(figsize=(8.5, 5), dpi=120)
    groups = sorted({r["group"] for r in points})
    for group in groups:
        mine = [r for r in points if r["group"] == group]
        ax.errorbar([r["input tokens / query"] for r in mine], [r["value"] for r in mine],
                    yerr=[r.get("ci") or 0.0 for r in mine], fmt="o", markersize=6, capsize=3, elinewidth=1,
                    label=group)
    at: dict[tuple[float, float], list[str]] = {}  # variants on one point share one label
    for r in points:
        at.setdefault((r["input tokens / query"], r["value"]), []).append(r["variant"])
    for (x, y), names in at.items():
        ax.annotate("\n".join(names), (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
    metric = points[0]["metric"].split()[0] if points else "metric"
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 20, 50, 100, 200, ...
    ax.xaxis.set_major_formatter(ScalarFormatter())  # 100, not 10^2; no labels on the minor ticks
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("input tokens per query (log scale)")
    ax.set_ylabel(metric)
    if any(r.get("ci") for r in points):
        title += " · bars: 95% bootstrap interval"
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if groups:  # beside the axes: inside, it hides points and their bars
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_sweep_report(root: Path, runs: Sequence[dict], provenance: dict) -> dict:
    """The sweep's comparison table (Markdown, CSV, JSON) and plot under ``<root>/sweeps/<time>-<hash>/``."""
    from promptintern.artifacts import stable_hash

    table = comparison_rows(runs)
    sweep_dir = root / "sweeps" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{stable_hash([runs, provenance], 8)}"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    md = f"{markdown_table(table, SWEEP_COLUMNS)}\n\nHow these numbers were made:\n{provenance_lines(provenance)}\n"
    (sweep_dir / "comparison.md").write_text(md)
    (sweep_dir / "comparison.csv").write_text(csv_table(table, SWEEP_COLUMNS))
    (sweep_dir / "comparison.json").write_text(json.dumps({"table": table, "runs": list(runs),
                                                           "provenance": provenance}, indent=2))
    plot = plot_metric_vs_tokens(table, sweep_dir / "metric_vs_tokens.png",
                                 f"{provenance.get('dataset', '')} · {provenance.get('model', '')}")
    return {"sweep_dir": str(sweep_dir), "table": table, "markdown": md, "plot": str(plot)}
