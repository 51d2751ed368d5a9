"""Scoring: one module per benchmark; ``score(task, predictions, references)`` dispatches.

Every score dict carries how it was made (``metric``, and for BLEU the sacrebleu signature).
"""

from __future__ import annotations

from typing import Sequence

from promptintern.evaluate import mbpp, nl2bash
from promptintern.evaluate.common import exact_match, normalize_ws

SCORERS = {"nl2bash": nl2bash.score, "mbpp": mbpp.score}


def postprocess(task: str, text: str) -> str:
    """The model's raw completion -> the answer that is scored."""
    return {"nl2bash": nl2bash.extract, "mbpp": mbpp.extract}[task](text)


def score(task: str, predictions: Sequence[str], references: Sequence[str]) -> dict:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return SCORERS[task](list(predictions), list(references))


__all__ = ["exact_match", "normalize_ws", "postprocess", "score"]
