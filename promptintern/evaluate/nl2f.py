"""NL2F (NL2Formula) scores: exact string match, overall and per difficulty level.

As the official metric (timetub/NL2Formula ``model_train/metrics/nl2formula``): a prediction counts
when it equals the reference formula (``Formula2``) as a string. Both sides are stripped of
surrounding whitespace first, which is what the official pipeline's tokenizer decoding amounts to;
nothing else is normalized (case, spaces inside the formula and a leading ``=`` all count).
Scores are percentages, like the other exact-match scores here (the official code reports a fraction).

Levels (easy / medium / hard / calculation) come from ``Example.meta["level"]``: pass them as
``levels`` to get ``by_level``; the official code files every level it does not know under
"calculation", we keep the level strings as they are.
"""

from __future__ import annotations

from typing import Sequence

from promptintern.evaluate.nl2bash import extract as _first_line


def extract(text: str) -> str:
    """The formula in a completion: its first non-empty line, stripped."""
    return _first_line(text)


def _em(pairs: list[tuple[str, str]]) -> float:
    return 100.0 * sum(p.strip() == r.strip() for p, r in pairs) / len(pairs) if pairs else 0.0


def score(predictions: Sequence[str], references: Sequence[str],
          levels: Sequence[str] | None = None) -> dict:
    pairs = list(zip(predictions, references))
    result = {"metric": "exact_match", "exact_match": round(_em(pairs), 4), "n": len(pairs),
              "by_level": {}}
    if levels is not None:
        if len(levels) != len(pairs):
            raise ValueError(f"{len(levels)} levels for {len(pairs)} references")
        grouped: dict[str, list[tuple[str, str]]] = {}
        for level, pair in zip(levels, pairs):
            grouped.setdefault(str(level), []).append(pair)
        result["by_level"] = {
            level: {"exact_match": round(_em(group), 4), "n": len(group)}
            for level, group in sorted(grouped.items())
        }
    return result


def score_rows(predictions: Sequence[str], examples: Sequence) -> dict:
    """The task-file form (``metric.callable``): exact match, broken down by each row's ``meta["level"]``."""
    return score(predictions, [ex.target for ex in examples], levels=[ex.meta.get("level", "") for ex in examples])
