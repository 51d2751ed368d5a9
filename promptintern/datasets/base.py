"""Typed records shared by every dataset: an ``Example`` is one (query, target) row.

A ``Task`` bundles what the pipeline needs to know about a benchmark: its template, its prompt
format, and how to load each split from a data directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ConfigDict

from promptintern.prompts import PromptFormat, Template


class DataError(ValueError):
    """Bad or missing data; the message names the file (and line) to look at."""


class Example(BaseModel):
    """One row: the query the user sends, the target the model should produce."""

    model_config = ConfigDict(frozen=True)

    id: str
    query: str
    target: str
    meta: dict[str, Any] = {}


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Yield the objects of a JSONL file; a bad line raises DataError with file:line."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (run `python -m promptintern.data fetch` first?)")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            missing = [key for key in required if key not in obj]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {missing}")
            yield obj


@dataclass(frozen=True)
class Task:
    """A benchmark: name, template, prompt format and split loader."""

    name: str
    template: Template
    format: PromptFormat
    splits: tuple[str, ...]
    load_split: Callable[[Path, str], list[Example]]
    metric: str
    default_k0: int = 10
    stop: tuple[str, ...] = ()  # generation stops at the first of these strings
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def load(self, data_dir: str | Path, split: str) -> list[Example]:
        if split not in self.splits:
            raise DataError(f"dataset {self.name!r} has no split {split!r}; allowed: {self.splits}")
        rows = self.load_split(Path(data_dir), split)
        if not rows:
            raise DataError(f"dataset {self.name!r} split {split!r} in {data_dir} is empty")
        return rows
