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


def is_looping(text: str, min_repeats: int = 3, max_span: int = 8) -> bool:
    """Whether a completion repeats itself: some block of 1 to ``max_span`` whitespace-separated words
    occurs ``min_repeats`` times back to back (``-name x -name x -name x``, ``a a a``).

    Used with "ran to the token limit" (``pipeline.benchmark``): greedy decoding that falls into a
    loop repeats until it is cut off; a short answer with a repeated word is not counted."""
    words = text.split()
    for span in range(1, max_span + 1):
        for start in range(0, len(words) - span * min_repeats + 1):
            block = words[start:start + span]
            if all(words[start + r * span:start + (r + 1) * span] == block for r in range(1, min_repeats)):
                return True
    return False
