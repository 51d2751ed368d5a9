"""MBPP (Austin et al., 2021): English task + three asserts -> a Python function.

File read: ``<data_dir>/mbpp/mbpp.jsonl`` (974 rows; keys text, code, task_id, test_setup_code,
test_list, challenge_test_list). Splits by task_id, as the paper's code uses them:
prompt 1-10, test 11-510 (500 tasks), validation 511-600, train 601-974.

Template (``promptintern/taskfiles/mbpp.yaml``) and query follow the official PromptIntern repo
exactly (../shared/data/PROMPTINTERN_NOTES.txt): the template is the system message, the query the
user message (description + the three test cases), the target ```` ```python\\n<code>\\n``` ````. The
one change: the reference code's CRLF line ends become LF, which tokenizers handle far better.
This module is the task file's ``data.loader``.
"""

from __future__ import annotations

from pathlib import Path

from promptintern.datasets.base import Example, read_jsonl

SPLIT_RANGES = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}


def user_message(text: str, test_list: list[str]) -> str:
    return (
        "\nHere is the description of the python tasks: \n"
        + text
        + " \nProvided below are three test cases, make sure your code can be tested by the test"
        " cases. Your given test cases are:\n"
        + "\n".join(test_list)
        + "\n"
    )


def target_code(code: str) -> str:
    return "```python\n" + code.replace("\r\n", "\n") + "\n```"


def load_split(data_dir: Path, split: str) -> list[Example]:
    ids = SPLIT_RANGES[split]
    path = data_dir / "mbpp" / "mbpp.jsonl"
    rows = []
    for obj in read_jsonl(path, required=("task_id", "text", "code", "test_list"),
                          types={"task_id": int, "text": str, "code": str, "test_list": list},
                          hint="run `python -m promptintern.data fetch` first"):
        if obj["task_id"] not in ids:
            continue
        rows.append(
            Example(
                id=str(obj["task_id"]),
                query=user_message(obj["text"], obj["test_list"]).strip(),
                target=target_code(obj["code"]),
                meta={
                    "task_id": obj["task_id"],
                    "test_list": obj["test_list"],
                    "test_setup_code": obj.get("test_setup_code", ""),
                    "challenge_test_list": obj.get("challenge_test_list", []),
                },
            )
        )
    return sorted(rows, key=lambda ex: ex.meta["task_id"])


load_split.source = lambda data_dir, split: (  # for error messages
    f"{Path(data_dir) / 'mbpp' / 'mbpp.jsonl'} (no task_id in {SPLIT_RANGES[split].start}-{SPLIT_RANGES[split].stop - 1})")
