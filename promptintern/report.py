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

COLUMNS = ("method", "prompt form", "train steps", "metric", "± 95% CI", "p vs promptintern", "exact match",
           "NLC2CMD", "BLEU BP", "looping", "output tokens", "input tokens / query", "vs full prompt",
           "s / instance", "speed-up vs full prompt", "speed-up vs template cached", "USD / 1K queries",
           "cost saved vs full prompt", "cost saved vs template cached")
CACHED = ", template cached"  # the row of a templated benchmark served with its template in a prompt cache

# What each benchmark of a run is, in the order a table lists them.
METHODS = {
    "promptintern": "the run's model (the curriculum), with the last stage's prompt form",
    "direct-no-template": "fine-tuned on the query alone for as many optimizer steps as the run",
    "base-full-prompt": "the untuned base model with the full template + k0 shots",
    "base-query-only": "the untuned base model with the query alone",
}
NOISE_P = 0.05  # a difference with a paired-bootstrap p-value under this is called beyond the test noise


def rows_from_metrics(metrics: Sequence[dict], full_prompt_label: str | None = None,
                      price_model: str = "gpt-4", significance: dict | None = None) -> list[dict]:
    """One table row per benchmark; ratios and savings are against ``full_prompt_label``.

    The cost column prices each method's prompts at ``price_model``'s list price (see
    ``promptintern/prices.json``); "cost saved" is the paper's 100 * (1 - ours / full), against two
    baselines: the full prompt recomputed on every call (the paper's) and the full prompt with its
    template served from a prompt cache (what a serving stack or a provider's cache gives; the
    cached tokens at the cached price where ``price_model`` lists one). A benchmark whose prompts
    carry a template (``template_cached`` in its metrics) gets both rows: "<label>" with the time of
    recomputing the template, "<label>, template cached" with the cached time and price.
    ``significance`` (``promptintern.significance.paired_bootstrap``) gives each row its 95%
    interval and its p-value against the baseline system.
    """
    by_label = {m["label"]: m for m in metrics}
    full = by_label.get(full_prompt_label) if full_prompt_label else None
    full_cached = (full or {}).get("template_cached")
    systems = (significance or {}).get("systems", {})

    def price(cost: dict | None) -> float | None:
        return (cost or {}).get("cost_per_1k_queries", {}).get(price_model)

    baselines = {"full prompt": (recomputed_seconds(full) if full else None, price(full.get("cost")) if full else None),
                 "template cached": (full_cached["seconds_per_instance"], price(full_cached["cost"]))
                 if full_cached else (None, None)}
    rows = []
    for m in metrics:
        main = m.get(m["metric"], float("nan"))
        ratio = (m["input_tokens_per_query"] / full["input_tokens_per_query"]) if full else float("nan")
        sig = systems.get(m["label"], {})
        row = {
            "method": m["label"],
            "prompt form": m.get("prompt_form", ""),
            "train steps": str(m["train_steps"]) if m.get("train_steps") is not None else "untuned",
            "metric": f"{m['metric']} {main:.2f}",
            "± 95% CI": f"± {sig['ci']:.2f}" if sig else "",
            "p vs promptintern": f"{sig['p_value']:.3f}" if sig.get("p_value") is not None else "",
            "exact match": f"{m.get('exact_match', float('nan')):.2f}",
            "NLC2CMD": f"{m['nlc2cmd']:.3f}" if "nlc2cmd" in m else "",
            "BLEU BP": f"{m['brevity_penalty']:.3f}" if "brevity_penalty" in m else "",
            "looping": f"{m['looping_rate']:.1f}%" if "looping_rate" in m else "",
            "output tokens": f"{m['output_tokens_per_query']:.1f}" if "output_tokens_per_query" in m else "",
            "input tokens / query": f"{m['input_tokens_per_query']:.1f}",
            "vs full prompt": f"{ratio:.3f}x" if full else "",
        }
        forms = [(m["label"], recomputed_seconds(m), price(m.get("cost")))]
        if m.get("template_cached"):
            forms.append((m["label"] + CACHED, m["template_cached"]["seconds_per_instance"],
                          price(m["template_cached"]["cost"])))
        for label, seconds, cost in forms:
            rows.append({**row, "method": label, "s / instance": f"{seconds:.3f}",
                         "USD / 1K queries": f"{cost:.3f} ({price_model})" if cost is not None else "",
                         **_against(baselines, seconds, cost)})
    return rows


def recomputed_seconds(m: dict) -> float:
    """Seconds per instance with the template recomputed on every call (the paper's full prompt)."""
    cached = m.get("template_cached")
    return cached["recomputed_seconds_per_instance"] if cached else m["seconds_per_instance"]


def _against(baselines: dict[str, tuple[float | None, float | None]], seconds: float, cost: float | None) -> dict:
    """Speed-up and cost saved of one row against each baseline (blank where a baseline is missing)."""
    cells = {}
    for name, (base_seconds, base_cost) in baselines.items():
        cells[f"speed-up vs {name}"] = f"{base_seconds / seconds:.2f}x" if base_seconds and seconds else ""
        cells[f"cost saved vs {name}"] = (f"{cost_saved(base_cost, cost):.1f}%"
                                          if cost is not None and base_cost else "")
    return cells


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


def run_significance(root: Path, eval_dirs: dict[str, str], metric: str, baseline: str = "promptintern") -> dict | None:
    """Paired bootstrap of the run's benchmarks against ``baseline`` on their predictions (None
    when there is nothing to compare, or the metric is not one the bootstrap can resample)."""
    from promptintern.significance import paired_bootstrap

    if baseline not in eval_dirs or len(eval_dirs) < 2 or metric not in ("bleu", "pass@1", "exact_match"):
        return None
    systems = {}
    for label, rel in eval_dirs.items():
        lines = (root / rel / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        systems[label] = [json.loads(line) for line in lines if line.strip()]
    return paired_bootstrap(metric, systems, baseline)


def verdict(metrics: Sequence[dict], sig: dict | None, ours: str = "promptintern",
            other: str = "direct-no-template") -> str:
    """One sentence: which of the run's model and the equal-steps direct baseline is ahead, and
    whether the gap is beyond the test noise. Empty when the run has no such baseline."""
    by_label = {m["label"]: m for m in metrics}
    if ours not in by_label or other not in by_label:
        return ""
    a, b = by_label[ours], by_label[other]
    name = a["metric"]
    gap = float(a[name]) - float(b[name])
    steps = f"{b['train_steps']} optimizer steps, as many as PromptIntern" if b.get("train_steps") else "equal steps"
    shown = {"bleu": "BLEU", "pass@1": "Pass@1", "exact_match": "exact match"}.get(name, name)
    head = f"PromptIntern {a[name]:.2f} vs fine-tuning on the query alone ({steps}) {b[name]:.2f} {shown}"
    p = ((sig or {}).get("systems", {}).get(other) or {}).get("p_value")
    if gap == 0:
        return f"{head}: a tie."
    leader = "PromptIntern" if gap > 0 else "fine-tuning on the query alone"
    if p is None:
        return f"{head}: {leader} is ahead by {abs(gap):.2f}; no significance test for this metric."
    rows = sig["rows"]
    noise = (f"beyond the test noise (paired bootstrap p = {p:.3f} over {rows} test rows)" if p < NOISE_P else
             f"within the test noise (paired bootstrap p = {p:.3f} over {rows} test rows): this run does not "
             f"tell them apart")
    return f"{head}: {leader} is ahead by {abs(gap):.2f}, {noise}."


def _distillation(distill) -> str:
    """The recipe's words for ``train.distill`` (a ``DistillSettings``; None: none)."""
    if distill is None:
        return ""
    return (f", distilled from the {distill.teacher} teacher (KL at T {distill.temperature:g}, weight "
            f"{distill.weight:g}, its top {distill.top_k})"
            + (f" and trained on its answers to {distill.unlabeled_queries} unlabeled queries"
               if distill.unlabeled_queries else ""))


def write_run_report(root: Path, cfg, eval_dirs: dict[str, str], stage_dirs: Sequence[str],
                     template_dirs: dict[float, str | None], baseline_dirs: dict[str, str] | None = None) -> dict:
    """One run's results table and provenance, written to ``<root>/runs/<time>-<config hash>/``.

    ``eval_dirs`` maps a method label (``METHODS``) to its benchmark folder; ``stage_dirs`` are the
    run's training stages, ``baseline_dirs`` the training folders of fine-tuned baselines by label;
    every path is relative to ``root``. Returns the rows, the metrics, the Markdown and the verdict.
    """
    from promptintern.artifacts import stable_hash

    template_rate = {"promptintern": cfg.schedule.inference_stage().tau, "base-full-prompt": 1.0,
                     "direct-no-template": 0.0, "base-query-only": 0.0}
    stages = [json.loads((root / rel / "stats.json").read_text()) for rel in stage_dirs]
    trained = {"promptintern": [s["optimizer_steps"] for s in stages]}
    for label, rel in (baseline_dirs or {}).items():
        trained[label] = [json.loads((root / rel / "stats.json").read_text())["optimizer_steps"]]
    metrics = []
    for label, rel in eval_dirs.items():
        m = json.loads((root / rel / "metrics.json").read_text())
        m["prompt_form"] = prompt_form(template_rate[label], m["k"])
        m["train_steps"] = sum(trained[label]) if label in trained else None
        metrics.append(m)
    full = "base-full-prompt" if "base-full-prompt" in eval_dirs else None
    sig = run_significance(root, eval_dirs, metrics[0]["metric"])
    rows = rows_from_metrics(metrics, full_prompt_label=full, price_model=cfg.eval.price_model, significance=sig)
    sentence = verdict(metrics, sig)
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
                           f"{m['sandbox']['timeout_s']} s of CPU per program"
                           + (f". WARNING: {m['sandbox']['warning']}" if m["sandbox"].get("warning") else "")
                           for m in metrics if "sandbox" in m), "n/a"),
        "cost": f"{cfg.eval.price_model} list prices of {first['cost']['prices_date']}, tokens counted "
                f"with {first['cost']['tokenizer']}",
        "recipe": (f"lr {cfg.train.lr:g}, {cfg.train.lr_schedule} schedule, warm-up {cfg.train.warmup_ratio:g}, "
                   + ("a fresh optimizer and schedule per stage" if cfg.train.reset_optimizer_each_stage
                      else "one optimizer and schedule across stages")
                   + (f", steps split {list(cfg.train.stage_weights)}" if cfg.train.stage_weights else "")
                   + (f", adaptive stage lengths ({cfg.train.adaptive.probe} probe of the next stage's form on "
                      f"{cfg.train.adaptive.dev_rows} {cfg.probe_split()} rows every {cfg.train.adaptive.every} steps, "
                      f"patience {cfg.train.adaptive.patience})" if cfg.train.adaptive else "")
                   + _distillation(cfg.train.distill)
                   + f", batch {cfg.train.batch_size} x {cfg.train.grad_accum}, train seed {cfg.train.seed}"),
        "training": "; ".join(f"stage {s['stage']}: {s['optimizer_steps']} steps"
                              f"{' (ended by its probe, ' + str(s.get('planned_steps')) + ' planned)' if s.get('advanced_early') else ''}"
                              f", loss {s['first_loss']:.3f}"
                              f" -> {s['final_loss']:.3f}, {s['tokens_per_second']:.0f} tok/s"
                              + (f", {s['rows_truncated']} of {s['rows']} rows truncated to train.max_seq_len "
                                 f"{cfg.train.max_seq_len} (longest {s['longest_row_tokens']} tokens)"
                                 if s.get("rows_truncated") else "") for s in stages),
        "methods": "; ".join(f"{label}: {METHODS[label]}" for label in eval_dirs),
        "significance": (f"{sig['method']}, {sig['n_samples']} resamples, seed {sig['seed']}, 95% intervals, "
                         f"p-values against promptintern" if sig else "n/a"),
        "template rates achieved": ", ".join(f"tau {t:g}: {v['rate_achieved']:.3f} ({v['tokens_after']} tokens)"
                                             for t, v in templates.items()),
    }
    run_dir = root / "runs" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{stable_hash(cfg, 8)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    md = markdown_table(rows) + (f"\n\n{sentence}" if sentence else "")
    md += f"\n\nHow these numbers were made:\n{provenance_lines(provenance)}\n"
    (run_dir / "results.md").write_text(md)
    (run_dir / "results.csv").write_text(csv_table(rows))
    (run_dir / "results.json").write_text(json.dumps({"rows": rows, "metrics": metrics, "provenance": provenance,
                                                      "stages": stages, "eval_dirs": dict(eval_dirs),
                                                      "stage_dirs": list(stage_dirs),
                                                      "baseline_dirs": dict(baseline_dirs or {}),
                                                      "significance": sig, "verdict": sentence}, indent=2))
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    return {"run_dir": str(run_dir), "rows": rows, "markdown": md, "metrics": metrics, "significance": sig,
            "verdict": sentence}


# ---------------------------------------------------------------------------------------------
# Machine-readable rows (Prefect table artifacts) and the sweep's comparison of variants
# ---------------------------------------------------------------------------------------------


def summary_rows(metrics: Sequence[dict], variant: str | None = None, significance: dict | None = None) -> list[dict]:
    """One numeric row per benchmark: what a UI table shows and what a sweep compares."""
    systems = (significance or {}).get("systems", {})
    return [{
        "variant": variant or "",
        "method": m["label"],
        "prompt form": m.get("prompt_form", ""),
        "train steps": m.get("train_steps"),
        "metric": m["metric"],
        "value": round(float(m[m["metric"]]), 4),
        "ci": round(systems[m["label"]]["ci"], 4) if m["label"] in systems else None,
        "p vs promptintern": systems.get(m["label"], {}).get("p_value"),
        "looping %": round(float(m["looping_rate"]), 2) if "looping_rate" in m else None,
        "exact match": round(float(m.get("exact_match", float("nan"))), 4),
        "input tokens / query": round(float(m["input_tokens_per_query"]), 2),
        "s / instance": round(float(recomputed_seconds(m)), 4),
        "s / instance, template cached": (round(float(m["template_cached"]["seconds_per_instance"]), 4)
                                          if m.get("template_cached") else None),
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
    """The paper's table a variant belongs to (or the curricula beyond the paper)."""
    from promptintern.variants import CURRICULA

    if name in CURRICULA:
        return "curriculum"
    if name.startswith("promptintern"):
        return "PromptIntern"
    if name.startswith(("no-", "schedule-", "bank-")):
        return "ablation"
    if name.startswith("direct-"):
        return "direct fine-tuning"
    return "prompt compression"


SWEEP_COLUMNS = ("group", "variant", "prompt form", "metric", "vs direct-no-template (equal steps)",
                 "input tokens / query", "fewer tokens than full prompt", "s / instance", "speed-up vs full prompt",
                 "speed-up vs template cached", "status")


def versus_direct(rows: Sequence[dict]) -> str:
    """A run's model against its equal-steps direct-no-template baseline: difference and p-value."""
    tuned = next((r for r in rows if r["method"] == "promptintern"), None)
    direct = next((r for r in rows if r["method"] == "direct-no-template"), None)
    if tuned is None or direct is None:
        return ""
    p = direct.get("p vs promptintern")
    return f"{tuned['value'] - direct['value']:+.2f}" + (f" (p {p:.3f})" if p is not None else "")


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
            row = _comparison_row(variant_group(run["variant"]), run["variant"], tuned, reference, run["status"])
            table.append({**row, "vs direct-no-template (equal steps)": versus_direct(run["rows"])})
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
        "speed-up vs template cached": (f"{reference['s / instance, template cached'] / seconds:.2f}x"
                                        if reference and reference.get("s / instance, template cached") and seconds
                                        else ""),
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
    return save_plot(fig, ax, path, legend=bool(groups))


def save_plot(fig, ax, path: Path, legend: bool) -> Path:
    """A light grid, the legend beside the axes (inside, it hides points and their bars), the PNG at
    ``path``, the figure closed: how every plot of the project ends."""
    import matplotlib.pyplot as plt

    ax.grid(True, alpha=0.3)
    if legend:
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
