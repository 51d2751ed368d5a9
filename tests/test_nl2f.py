"""NL2F (NL2Formula): the loader on records written here, its errors, exact match per level."""

import json

import pytest

from promptintern.datasets import DataError, get_task
from promptintern.datasets.nl2f import column_name, render_table
from promptintern.datasets import postprocess
from promptintern.evaluate import score
from promptintern.prompts import render_prompt

TABLE = [["Month", "Region", "Sales"]] + [[f"M{i}", "North" if i % 2 else "South", str(100 * i)] for i in range(1, 11)]
RECORDS = [
    {"TableName": "sales", "Table": TABLE, "t5Formulas": [
        {"Question": "What is the total sales?", "Formula": "=SUM(Sales)", "Formula2": "=SUM(C2:C11) ",
         "Level": "easy"},
        {"Question": "How many rows are in the North region?", "Formula": "=COUNTIF(Region,\"North\")",
         "Formula2": "=COUNTIF(B2:B11,\"North\")", "Level": "medium"},
    ]},
    {"TableName": "tiny", "Table": [["Name", "Notes"], ["a", "x" * 200]], "t5Formulas": [
        {"Question": "Who is first?", "Formula": "=A2", "Formula2": "=A2", "Level": "calculation"},
    ]},
]


def write(tmp_path, split, payload):
    (tmp_path / "nl2f").mkdir(exist_ok=True)
    path = tmp_path / "nl2f" / f"{split}.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def test_loader_makes_one_example_per_formula(tmp_path):
    write(tmp_path, "test", RECORDS)
    task = get_task("nl2f")
    assert task.splits == ("train", "valid", "test") and task.stop
    rows = task.load(tmp_path, "test")
    scores = task.score([rows[0].target, "=1", rows[2].target], rows)  # the task file's scorer
    assert scores["metric"] == "exact_match" and scores["exact_match"] == pytest.approx(200 / 3, abs=1e-3)
    assert scores["by_level"]["medium"]["exact_match"] == 0.0
    assert [r.id for r in rows] == ["test-0-0", "test-0-1", "test-1-0"]
    assert rows[0].target == "=SUM(C2:C11)"  # Formula2, stripped
    assert rows[1].meta == {"table_name": "sales", "level": "medium", "formula": '=COUNTIF(Region,"North")'}
    query = rows[0].query
    assert query.startswith("What is the total sales?\nTable \"sales\": 10 data rows (rows 2-11)")
    assert "A=Month | B=Region | C=Sales" in query
    assert "row 4: M3 | North | 300" in query and "row 5:" not in query  # first 3 data rows only
    assert len(rows[2].query) < 200  # the 200-char cell is cut
    prompt = render_prompt(task.format, rows[0].query, task.template.text, [(rows[1].query, rows[1].target)])
    assert prompt.endswith("row 4: M3 | North | 300\nFormula:")
    assert '\nFormula: =COUNTIF(B2:B11,"North")' in prompt


def test_render_table_is_bounded():
    wide = [[f"column {i}" for i in range(200)], ["v"] * 200]
    assert len(render_table("wide", wide)) <= 600
    assert render_table("e", []) == 'Table "e": empty'
    assert [column_name(i) for i in (0, 25, 26, 701)] == ["A", "Z", "AA", "ZZ"]


@pytest.mark.parametrize("payload, message", [
    ('[{"TableName": "t", "Table": [],\n "t5Formulas": [}]', r"test\.json:2:\d+: not valid JSON"),
    ({"TableName": "t"}, r"test\.json: expected a JSON array"),
    ([RECORDS[0], {"TableName": "t", "Table": []}], r"test\.json: table 1: missing field\(s\) \['t5Formulas'\]"),
    ([{"TableName": "t", "Table": [], "t5Formulas": [{"Question": "q", "Formula": "f", "Level": "easy"}]}],
     r"test\.json: table 0 \('t'\), t5Formulas\[0\]: missing field\(s\) \['Formula2'\]"),
    ([{"TableName": "t", "Table": "A,B", "t5Formulas": []}], r"test\.json: table 0 \('t'\): 'Table' must be"),
])
def test_malformed_files_name_the_file_and_position(tmp_path, payload, message):
    write(tmp_path, "test", payload)
    with pytest.raises(DataError, match=message):
        get_task("nl2f").load(tmp_path, "test")


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"valid\.json: file not found .*NL2Formula"):
        get_task("nl2f").load(tmp_path, "valid")


def test_exact_match_and_level_breakdown():
    preds = ["=SUM(C2:C11)", "=countif(B2:B11,\"North\")", " =A2 \n", "=MAX(C2:C11)"]
    refs = ["=SUM(C2:C11)", "=COUNTIF(B2:B11,\"North\")", "=A2", "=MAX(C2:C11)"]
    levels = ["easy", "medium", "calculation", "easy"]
    result = score("nl2f", preds, refs, levels=levels)
    assert result["metric"] == "exact_match" and result["n"] == 4
    assert result["exact_match"] == 75.0  # case counts; surrounding whitespace does not
    assert result["by_level"] == {"calculation": {"exact_match": 100.0, "n": 1},
                                  "easy": {"exact_match": 100.0, "n": 2},
                                  "medium": {"exact_match": 0.0, "n": 1}}
    assert score("nl2f", preds, refs)["by_level"] == {}
    with pytest.raises(ValueError, match="levels"):
        score("nl2f", preds, refs, levels=levels[:2])
    assert postprocess("nl2f", "\n =SUM(C2:C11) \nexplanation") == "=SUM(C2:C11)"
