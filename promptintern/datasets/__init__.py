"""Datasets: one module per benchmark, each exporting a ``TASK``; ``get_task(name)`` looks one up."""

from __future__ import annotations

from promptintern.datasets.base import DataError, Example, Task, read_jsonl
from promptintern.datasets import mbpp, nl2bash, nl2f

TASKS: dict[str, Task] = {task.name: task for task in (nl2bash.TASK, mbpp.TASK, nl2f.TASK)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; allowed: {sorted(TASKS)}") from None


__all__ = ["DataError", "Example", "Task", "TASKS", "get_task", "read_jsonl"]
