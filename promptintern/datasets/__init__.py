"""Datasets: every task, built-in or not, is a task file (``promptintern.taskfile``).

``get_task("nl2bash")`` reads ``promptintern/taskfiles/nl2bash.yaml``; ``get_task("path/to/task.yaml")``
reads that file. The modules here hold what a task file cannot say in columns: the MBPP query
builder and split ranges (``mbpp.load_split``) and the NL2F table rendering (``nl2f.load_split``),
which the built-in task files name as their ``data.loader``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from promptintern.datasets.base import UNLABELED, DataError, Example, Task, read_jsonl


def get_task(name_or_path: str, data_dir: str | Path | None = None) -> Task:
    """The task a built-in name (``nl2bash``, ``mbpp``, ``nl2f``) or a task file path declares.

    ``data_dir`` fills ``{data_dir}`` in the file's paths (default ``data``); ``Task.load(data_dir,
    split)`` passes its own, so only error messages and pools use this one."""
    from promptintern.taskfile import task_source

    source = task_source(str(name_or_path))
    return _cached_task(str(source), source.stat().st_mtime_ns, str(data_dir) if data_dir else None)


@lru_cache(maxsize=64)
def _cached_task(source: str, mtime_ns: int, data_dir: str | None) -> Task:
    from promptintern.taskfile import build_task, read_task_file

    return build_task(read_task_file(source), Path(source), data_dir)


def postprocess(task: str, text: str) -> str:
    """A task's answer extraction (its task file's ``metric.postprocess``) applied to ``text``."""
    return get_task(task).postprocess(text)


def builtin_tasks() -> list[str]:
    from promptintern.taskfile import builtin_names

    return builtin_names()


__all__ = ["UNLABELED", "DataError", "Example", "Task", "builtin_tasks", "get_task", "postprocess", "read_jsonl"]
