"""The example task's metric (``metric: {name: python, callable: unit_metric:score}``).

Exact match is the headline; beside it, what a small model gets right before its arithmetic:
the answer's form (a number, a space, a unit symbol), the right unit symbol, and the value within
2% of the reference. This module sits next to task.yaml; promptintern imports it from there.
"""

from __future__ import annotations

import re

ANSWER = re.compile(r"^(-?\d+(?:\.\d+)?) (\S+)$")


def _parse(text: str) -> tuple[float, str] | None:
    match = ANSWER.match(text.strip())
    return (float(match.group(1)), match.group(2)) if match else None


def score(predictions: list[str], examples: list) -> dict:
    n = len(examples)
    form = unit = close = exact = 0
    for prediction, example in zip(predictions, examples):
        exact += prediction.strip() == example.target.strip()
        got, want = _parse(prediction), _parse(example.target)
        if got is None or want is None:
            continue
        form += 1
        unit += got[1] == want[1]
        close += got[1] == want[1] and abs(got[0] - want[0]) <= 0.02 * max(abs(want[0]), 0.01)
    pct = (lambda k: round(100.0 * k / n, 4) if n else 0.0)
    return {"metric": "exact_match", "exact_match": pct(exact), "answer_form": pct(form),
            "unit_correct": pct(unit), "within_2pct": pct(close)}
