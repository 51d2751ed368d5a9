"""NL2F = NL2Formula (Zhao et al., EACL 2024 Findings): question about a table -> spreadsheet formula.

Files read: ``<data_dir>/nl2f/{train,valid,test}.json``, the layout of timetub/NL2Formula
``dataset/{train,valid,test}.json`` (not shipped here: no license, not downloadable; point
``data_dir`` at a copy). Each file is one JSON array of tables::

    [{"TableName": str, "Table": [[cell, ...], ...],
      "t5Formulas": [{"Question": str, "Formula": str, "Formula2": str, "Level": str}, ...]}, ...]

One ``Example`` per ``t5Formulas`` entry, in file order, id ``<split>-<table index>-<entry index>``.
The target is ``Formula2``, as the official loader uses it; ``meta`` keeps ``table_name``,
``level`` (easy / medium / hard / calculation) and the original ``formula``.

The query is the question followed by a compact rendering of the table (ours; the official T5
input flattens every cell of the table into one line, which is unbounded). The first row of
``Table`` is taken as the header, as in a spreadsheet's row 1, and rows/columns are labelled the
way formulas address them::

    What is the total sales in March?
    Table "sales_2023": 120 data rows (rows 2-121), columns A=Month | B=Region | C=Sales
    row 2: January | North | 1200
    row 3: January | South | 980
    row 4: February | North | 1130

At most ``MAX_ROWS`` data rows are shown, each cell cut to ``MAX_CELL_CHARS`` characters, and the
whole table part to ``MAX_TABLE_CHARS`` (cut at a line end when possible, ending with "...").

The template (``promptintern/taskfiles/nl2f.yaml``: instruction + a short reference of spreadsheet
functions) is ours: the paper gives none. This module is the task file's ``data.loader``.
Metric: exact string match after stripping (``promptintern.evaluate.nl2f``), with a per-level breakdown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from promptintern.datasets.base import DataError, Example

MAX_ROWS = 3
MAX_CELL_CHARS = 30
MAX_TABLE_CHARS = 600

SPLITS = ("train", "valid", "test")
TABLE_KEYS = ("TableName", "Table", "t5Formulas")
FORMULA_KEYS = ("Question", "Formula", "Formula2", "Level")


def column_name(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: the spreadsheet name of a column."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def _cell(value: Any, limit: int = MAX_CELL_CHARS) -> str:
    text = " ".join(("" if value is None else str(value)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_table(name: str, table: list[list[Any]], max_rows: int = MAX_ROWS,
                 max_chars: int = MAX_TABLE_CHARS) -> str:
    """The bounded table description used in every query (see the module docstring)."""
    if not table:
        return f'Table "{name}": empty'
    header, data = table[0], table[1:]
    columns = " | ".join(f"{column_name(i)}={_cell(h)}" for i, h in enumerate(header))
    span = f" (rows 2-{len(data) + 1})" if data else ""
    lines = [f'Table "{name}": {len(data)} data rows{span}, columns {columns}']
    lines += [f"row {i + 2}: " + " | ".join(_cell(c) for c in row) for i, row in enumerate(data[:max_rows])]
    text = "\n".join(lines)
    if len(text) > max_chars:
        cut = text.rfind("\n", 0, max_chars - 3)
        text = text[: cut if cut > 0 else max_chars - 3] + "..."
    return text


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(
            f"{path}: file not found (NL2Formula is not shipped: copy timetub/NL2Formula "
            f"dataset/{{train,valid,test}}.json into {path.parent})"
        )
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: byte {err.start}: not UTF-8") from None


def _check_record(path: Path, i: int, record: Any) -> None:
    where = f"{path}: table {i}"
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    missing = [key for key in TABLE_KEYS if key not in record]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}")
    table = record["Table"]
    if not isinstance(table, list) or not all(isinstance(row, list) for row in table):
        raise DataError(f"{where} ({record['TableName']!r}): 'Table' must be a list of rows (lists)")
    if not isinstance(record["t5Formulas"], list):
        raise DataError(f"{where} ({record['TableName']!r}): 't5Formulas' must be a list")
    for j, entry in enumerate(record["t5Formulas"]):
        if not isinstance(entry, dict):
            raise DataError(f"{where}, t5Formulas[{j}]: expected an object, got {type(entry).__name__}")
        missing = [key for key in FORMULA_KEYS if key not in entry]
        if missing:
            raise DataError(f"{where} ({record['TableName']!r}), t5Formulas[{j}]: missing field(s) {missing}")


def load_split(data_dir: Path, split: str) -> list[Example]:
    path = data_dir / "nl2f" / f"{split}.json"
    records = _load_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON array of tables, got {type(records).__name__}")
    rows = []
    for i, record in enumerate(records):
        _check_record(path, i, record)
        table_text = render_table(str(record["TableName"]), record["Table"])
        for j, entry in enumerate(record["t5Formulas"]):
            rows.append(
                Example(
                    id=f"{split}-{i}-{j}",
                    query=f"{str(entry['Question']).strip()}\n{table_text}",
                    target=str(entry["Formula2"]).strip(),
                    meta={
                        "table_name": str(record["TableName"]),
                        "level": str(entry["Level"]),
                        "formula": str(entry["Formula"]),
                    },
                )
            )
    return rows


load_split.source = lambda data_dir, split: str(Path(data_dir) / "nl2f" / f"{split}.json")  # for error messages
