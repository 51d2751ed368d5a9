import json

import pytest

from conftest import SHARED_DATA
from promptintern.datasets import DataError, get_task, read_jsonl
from promptintern.prompts import render_prompt

needs_shared = pytest.mark.skipif(not (SHARED_DATA / "mbpp" / "mbpp.jsonl").is_file(),
                                  reason="../shared/data (the local mirror) is not beside the repo")


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 0, "nl": "a", "cmd": "b"}\n{"id": 1, "nl": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        list(read_jsonl(path))
    path.write_text('{"id": 0, "nl": "a"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing field\(s\) \['cmd'\]"):
        list(read_jsonl(path, required=("id", "nl", "cmd")))


def test_unknown_dataset_and_split_are_named():
    with pytest.raises(DataError, match="allowed"):
        get_task("nl2sql")
    with pytest.raises(DataError, match="no split 'validation'"):
        get_task("nl2bash").load("data", "validation")


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "nl2bash" / "split").mkdir(parents=True)
    (tmp_path / "nl2bash" / "split" / "test.jsonl").write_text("")
    with pytest.raises(DataError, match="is empty"):
        get_task("nl2bash").load(tmp_path, "test")


def test_nl2bash_rows_and_prompt(tiny_data_dir):
    task = get_task("nl2bash")
    rows = task.load(tiny_data_dir, "train")
    assert len(rows) == 32 and rows[0].id == "train-0"
    prompt = render_prompt(task.format, rows[0].query, task.template.text, [(rows[1].query, rows[1].target)])
    assert prompt.startswith("You are an expert Linux")
    assert f"Task: {rows[1].query}\nCommand: {rows[1].target}" in prompt
    assert prompt.endswith(f"Task: {rows[0].query}\nCommand:")
    assert len(task.template.text) > 1500  # long enough for compression to matter


@needs_shared
def test_real_split_sizes():
    nl2bash, mbpp = get_task("nl2bash"), get_task("mbpp")
    assert [len(nl2bash.load(SHARED_DATA, s)) for s in ("train", "dev", "test")] == [8090, 609, 606]
    sizes = {s: len(mbpp.load(SHARED_DATA, s)) for s in ("prompt", "test", "validation", "train")}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    test = mbpp.load(SHARED_DATA, "test")
    assert [r.meta["task_id"] for r in test] == list(range(11, 511))


@needs_shared
def test_mbpp_prompt_matches_the_official_repo_recipe():
    row = get_task("mbpp").load(SHARED_DATA, "test")[0]
    raw = next(json.loads(l) for l in (SHARED_DATA / "mbpp" / "mbpp.jsonl").open() if json.loads(l)["task_id"] == 11)
    assert row.query in "\nHere is the description of the python tasks: \n" + raw["text"] + (
        " \nProvided below are three test cases, make sure your code can be tested by the test cases."
        " Your given test cases are:\n" + "\n".join(raw["test_list"]) + "\n")
    assert row.target == "```python\n" + raw["code"].replace("\r\n", "\n") + "\n```"
    assert "descirption" in get_task("mbpp").template.text  # the original's typo, kept verbatim
