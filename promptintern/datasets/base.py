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


UNLABELED = "unlabeled"  # the split of queries nobody has answered (train.distill.unlabeled_queries)


class DataError(ValueError):
    """Bad or missing data; the message names the file (and line) to look at."""


class TaskFileError(DataError):
    """A task file that cannot be used; the message names the file, line and key."""


class Example(BaseModel):
    """One row: the query the user sends, the target the model should produce."""

    model_config = ConfigDict(frozen=True)

    id: str
    query: str
    target: str
    meta: dict[str, Any] = {}


def read_jsonl(path: Path, required: tuple[str, ...] = (),
               types: dict[str, type | tuple[type, ...]] | None = None, hint: str = "") -> Iterator[dict]:
    """Yield the objects of a JSONL file; a bad line raises DataError with file:line.

    Bad means: not UTF-8, not JSON, not a JSON object, missing a ``required`` field, or a field
    whose value is not of its type in ``types`` (e.g. ``{"nl": str}``: a null query is an error
    here, not an AttributeError three functions later). Blank lines are skipped. ``hint``: what to
    do about a missing file (the built-in benchmarks: fetch the data)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found" + (f" ({hint})" if hint else ""))
    types = types or {}
    with path.open("rb") as fh:  # decoded line by line, so a bad byte is reported at its line
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{lineno}: not UTF-8 (byte {err.start + 1} of the line: {err.reason})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            missing = [key for key in required if key not in obj]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {missing}; every row needs {list(required)}")
            for key, kind in types.items():
                if key in obj and not isinstance(obj[key], kind):
                    names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
                    raise DataError(f"{path}:{lineno}: field {key!r} must be {names}, "
                                    f"got {type(obj[key]).__name__} ({obj[key]!r:.40})")
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
    # where a split's rows come from, for error messages: (data_dir, split) -> "<file> (...)"
    split_source: Callable[[Path, str], str] | None = None
    # the model's raw completion -> the answer that is scored
    postprocess: Callable[[str], str] = str.strip
    # (answers, test rows, sandbox options) -> scores with "metric" naming the headline key
    score: Callable[..., dict] | None = None
    # a fixed pool of few-shot examples (data_dir -> rows); None: shots come from the training rows
    load_pool: Callable[[Path], list[Example]] | None = None
    shot_select: str = "retrieve"  # with a pool: "fixed" (its first k) or "retrieve"
    chat: str = "auto"             # auto | on | off: prompts through the model's chat template
    source: str = ""               # the task file this task was read from

    def load(self, data_dir: str | Path, split: str) -> list[Example]:
        if split not in self.splits:
            raise DataError(f"dataset {self.name!r} has no split {split!r}; allowed: {self.splits}")
        rows = self.load_split(Path(data_dir), split)
        if not rows:
            source = self.split_source(Path(data_dir), split) if self.split_source else str(data_dir)
            raise DataError(f"{source}: the {split!r} split of dataset {self.name!r} is empty (0 rows); "
                            f"every split the run reads needs at least one row")
        return rows
