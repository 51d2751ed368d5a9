"""Results tables: one row per evaluated prompt form, as Markdown and CSV.

Columns follow the paper: the task metric(s), input tokens per query, compression ratio against
the full prompt, seconds per instance. Each table ends with how its numbers were made.
"""

from __future__ import annotations

import csv
import io
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
