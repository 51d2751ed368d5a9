"""Scoring: one module per benchmark; ``score(task, predictions, references)`` dispatches,
``score_examples`` adds what needs the rows themselves (MBPP execution, NL2F levels).

Every score dict carries how it was made (``metric``, and for BLEU the sacrebleu signature).
Extra keyword arguments go to the benchmark's scorer: NL2F takes ``levels`` (one per reference,
``Example.meta["level"]``) for its per-level breakdown.
"""

from __future__ import annotations

from typing import Sequence

from promptintern.evaluate import mbpp, nl2bash, nl2f
from promptintern.evaluate.common import exact_match, normalize_ws

SCORERS = {"nl2bash": nl2bash.score, "mbpp": mbpp.score, "nl2f": nl2f.score}


def postprocess(task: str, text: str) -> str:
    """The model's raw completion -> the answer that is scored."""
    return {"nl2bash": nl2bash.extract, "mbpp": mbpp.extract, "nl2f": nl2f.extract}[task](text)


def score(task: str, predictions: Sequence[str], references: Sequence[str], **extra) -> dict:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return SCORERS[task](list(predictions), list(references), **extra)


def score_examples(task: str, predictions: Sequence[str], examples: Sequence, sandbox: dict | None = None) -> dict:
    """Score answers against dataset rows: what each benchmark needs beyond the target text.

    MBPP adds Pass@1: every answer runs against its row's asserts in ``promptintern.sandbox``
    (``sandbox`` holds the ``Sandbox`` keyword arguments); the per-task verdicts come back under
    ``per_task`` and the headline metric becomes ``pass@1``. NL2F adds the per-level breakdown.
    """
    references = [ex.target for ex in examples]
    if task == "nl2f":
        return score(task, predictions, references, levels=[ex.meta.get("level", "") for ex in examples])
    result = score(task, predictions, references)
    if task == "mbpp":
        from promptintern.evaluate.execution import mbpp_pass_at_1
        from promptintern.sandbox import Sandbox

        with Sandbox(**(sandbox or {})) as box:
            executed = mbpp_pass_at_1(examples, predictions, box)
        result = {**result, **executed, "exact_match": result["exact_match"], "metric": "pass@1"}
    return result


__all__ = ["exact_match", "normalize_ws", "postprocess", "score", "score_examples"]
