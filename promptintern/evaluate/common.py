"""Metrics shared by the benchmarks."""

from __future__ import annotations

from typing import Sequence


def normalize_ws(text: str) -> str:
    """Collapse runs of whitespace and strip the ends."""
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share (in %) of predictions equal to their reference after whitespace normalization."""
    if not references:
        return 0.0
    hits = sum(normalize_ws(p) == normalize_ws(r) for p, r in zip(predictions, references))
    return 100.0 * hits / len(references)
