"""Scoring. A task's ``metric`` (its task file) becomes one scorer here: ``make_scorer``.

Metrics a task file can name (``metric.name``):

==============  ==================================================================================
``exact_match`` share (%) of answers equal to the reference after whitespace normalization
``bleu``        sacrebleu corpus BLEU (13a tokenizer, signature stored) + exact match
``chrf``        sacrebleu corpus chrF (signature stored) + exact match
``execution``   Pass@1: the answer, then the row's ``tests`` column, run in ``promptintern.sandbox``
                (after the optional ``setup`` column) + exact match
``python``      ``package.module:function(predictions, examples) -> dict`` with ``"metric"`` naming
                its headline key (the built-in NL2Bash and NL2F scorers are such functions)
==============  ==================================================================================

Every score dict carries how it was made (``metric``, and for BLEU / chrF the sacrebleu signature).
Answers are the model's completions after ``postprocess`` (``make_postprocess``); references get
the same treatment, so a fenced reference program compares with an extracted answer.

``score(task, predictions, references)`` and ``postprocess(task, text)`` keep the built-in
benchmarks' reference-only scorers at hand (tests, notebooks).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from promptintern.evaluate import mbpp, nl2bash, nl2f
from promptintern.evaluate.common import exact_match, normalize_ws

SCORERS = {"nl2bash": nl2bash.score, "mbpp": mbpp.score, "nl2f": nl2f.score}
POSTPROCESS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "first-line": nl2bash.extract,
    "code-block": mbpp.extract,
}


def score(task: str, predictions: Sequence[str], references: Sequence[str], **extra) -> dict:
    """A built-in benchmark's reference-only score."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return SCORERS[task](list(predictions), list(references), **extra)


def make_postprocess(spec: str, where: str, base=None) -> Callable[[str], str]:
    """``strip`` | ``first-line`` | ``code-block`` | ``package.module:function`` (importable, or
    a module in ``base``, the task file's folder)."""
    if spec in POSTPROCESS:
        return POSTPROCESS[spec]
    from promptintern.callables import import_callable

    return import_callable(spec, where, base)


def _sacrebleu(name: str, answers: list[str], references: list[str]) -> dict:
    from sacrebleu.metrics import BLEU, CHRF

    metric = BLEU(tokenize=nl2bash.BLEU_TOKENIZE) if name == "bleu" else CHRF()
    result = metric.corpus_score(answers, [references])
    return {"metric": name, name: round(result.score, 4), "sacrebleu_signature": str(metric.get_signature())}


def make_scorer(spec, where: str, base=None) -> Callable[..., dict]:
    """``spec``: a task file's ``MetricSpec``. The scorer takes (answers, test rows, sandbox options)."""
    post = make_postprocess(spec.postprocess, f"{where}.postprocess", base)
    custom = None
    if spec.name == "python":
        from promptintern.callables import import_callable

        custom = import_callable(spec.callable, f"{where}.callable", base)

    def scorer(answers: Sequence[str], examples: Sequence, sandbox: dict | None = None) -> dict:
        answers = list(answers)
        if len(answers) != len(examples):
            raise ValueError(f"{len(answers)} answers for {len(examples)} rows")
        if custom is not None:
            result = custom(answers, list(examples))
            if not isinstance(result, dict) or result.get("metric") not in result:
                raise ValueError(f"{where}.callable {spec.callable} must return a dict with 'metric' naming "
                                 f"its headline key and that key; got {str(result)[:200]}")
            return {"n": len(answers), **result}
        references = [post(ex.target) for ex in examples]
        result: dict[str, Any] = {"metric": "exact_match",
                                  "exact_match": round(exact_match(answers, references), 4), "n": len(answers)}
        if spec.name in ("bleu", "chrf"):
            result |= _sacrebleu(spec.name, answers, references)
        if spec.name == "execution":
            result = {**result, **_execute(answers, examples, spec, sandbox), "exact_match": result["exact_match"]}
        return result

    return scorer


def _execute(answers: list[str], examples: Sequence, spec, sandbox: dict | None) -> dict:
    """Pass@1 of the answers against each row's tests (a list of statements, or one string)."""
    import time

    from promptintern.evaluate.execution import pass_at_1, run_tests_many
    from promptintern.sandbox import Sandbox

    items = []
    for answer, ex in zip(answers, examples):
        tests = ex.meta.get(spec.tests)
        if tests is None:
            raise ValueError(f"row {ex.id}: no tests in column {spec.tests!r} (metric.tests)")
        setup = (ex.meta.get(spec.setup) or "") if spec.setup else ""
        items.append((answer, [tests] if isinstance(tests, str) else list(tests), setup))
    with Sandbox(**(sandbox or {})) as box:
        start = time.monotonic()
        verdicts = run_tests_many(box, items)
        return pass_at_1([ex.meta.get("task_id", ex.id) for ex in examples], verdicts, time.monotonic() - start, box)


__all__ = ["exact_match", "make_postprocess", "make_scorer", "normalize_ws", "score"]
