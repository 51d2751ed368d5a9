"""Results tables: one row per evaluated prompt form, as Markdown and CSV.

Columns follow the paper: the task metric(s), input tokens per query, compression ratio against
the full prompt, seconds per instance. Each table ends with how its numbers were made.
"""

from __future__ import annotations

import csv
import io
from typing import Sequence

COLUMNS = ("method", "prompt form", "metric", "exact match", "input tokens / query",
           "vs full prompt", "s / instance")


def rows_from_metrics(metrics: Sequence[dict], full_prompt_label: str | None = None) -> list[dict]:
    by_label = {m["label"]: m for m in metrics}
    full = by_label.get(full_prompt_label) if full_prompt_label else None
    rows = []
    for m in metrics:
        main = m.get(m["metric"], float("nan"))
        ratio = (m["input_tokens_per_query"] / full["input_tokens_per_query"]) if full else float("nan")
        rows.append({
            "method": m["label"],
            "prompt form": m.get("prompt_form", ""),
            "metric": f"{m['metric']} {main:.2f}",
            "exact match": f"{m.get('exact_match', float('nan')):.2f}",
            "input tokens / query": f"{m['input_tokens_per_query']:.1f}",
            "vs full prompt": f"{ratio:.3f}x" if full else "",
            "s / instance": f"{m['seconds_per_instance']:.3f}",
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
