"""Stage shards exported as OpenAI chat fine-tuning JSONL, and the cookbook's format checks."""

import json

import numpy as np
import pytest

from promptintern.datasets import Example
from promptintern.datasets import get_task

NL2BASH, MBPP = get_task("nl2bash"), get_task("mbpp")
MBPP_SYSTEM = MBPP.template.sections[0].text
from promptintern.export import (
    inspect_openai_chat_jsonl,
    shard_to_openai_jsonl,
    split_prompt,
    validate_openai_chat_jsonl,
)
from promptintern.models import load_tokenizer
from promptintern.schedule import StageSpec
from promptintern.shards import read_shard, write_shard

ROWS = [
    Example(id="train-0", query="list all files in the current directory", target="ls -a"),
    Example(id="train-1", query="count the lines in file.txt", target="wc -l file.txt"),
    Example(id="train-2", query="find all python files under src — ünïcode", target="find src -name '*.py'"),
    Example(id="train-3", query="show free disk space", target="df -h"),
]
NEIGHBORS = np.array([[(i + 1) % 4, (i + 2) % 4] for i in range(4)])
TEMPLATE = NL2BASH.template.text


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def make_shard(tmp_path, tok, spec, template_text):
    path = tmp_path / f"{spec.name}.parquet"
    write_shard(path, ROWS, ROWS, NEIGHBORS if spec.k else None, spec, template_text, NL2BASH.format, tok)
    return path


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_stage_with_template_and_shots_roundtrips(tmp_path, tok):
    shard = make_shard(tmp_path, tok, StageSpec(stage=1, tau=1.0, k=1), TEMPLATE)
    out = tmp_path / "stage1.jsonl"
    stats = shard_to_openai_jsonl(shard, out, TEMPLATE, fmt=NL2BASH.format)
    assert stats["rows"] == 4 == stats["rows_with_system"] == stats["rows_template_split"]
    assert stats["path"] == str(out)
    assert set(stats["mean_chars"]) == {"system", "user", "assistant"}
    assert validate_openai_chat_jsonl(out) == []

    table = read_shard(shard).to_pylist()
    lines = read_lines(out)
    assert len(lines) == len(table)
    for row, ex, line in zip(table, ROWS, lines):
        assert list(line) == ["messages"]
        system, user, assistant = line["messages"]
        assert [m["role"] for m in line["messages"]] == ["system", "user", "assistant"]
        assert system["content"] == TEMPLATE.strip()
        assert system["content"] + NL2BASH.format.separator + user["content"] == row["prompt"]
        assert user["content"].startswith("Examples:") and user["content"].endswith(f"Task: {ex.query}\nCommand:")
        assert assistant["content"] == ex.target == row["target"][1:]
    # ensure_ascii=False: non-ASCII text is written as is
    assert "ünïcode" in out.read_text(encoding="utf-8")


def test_query_only_stage_has_no_system_message(tmp_path, tok):
    shard = make_shard(tmp_path, tok, StageSpec(stage=2, tau=0.0, k=0), "")
    out = tmp_path / "stage2.jsonl"
    stats = shard_to_openai_jsonl(shard, out, "", fmt=NL2BASH.format)
    assert stats["rows_with_system"] == 0 and stats["mean_chars"]["system"] == 0.0
    assert validate_openai_chat_jsonl(out) == []
    for row, ex, line in zip(read_shard(shard).to_pylist(), ROWS, read_lines(out)):
        assert [m["role"] for m in line["messages"]] == ["user", "assistant"]
        assert line["messages"][0]["content"] == row["prompt"] == f"Task: {ex.query}\nCommand:"
        assert line["messages"][1]["content"] == ex.target

    # a fixed system prompt for rows without the template; without fmt, leading space stripped
    stats = shard_to_openai_jsonl(shard, out, "", system_prompt="Answer with bash.")
    lines = read_lines(out)
    assert stats["rows_with_system"] == 4 and stats["rows_template_split"] == 0
    assert lines[0]["messages"][0] == {"role": "system", "content": "Answer with bash."}
    assert lines[0]["messages"][1]["content"] == f"Task: {ROWS[0].query}\nCommand:"
    assert lines[0]["messages"][2]["content"] == ROWS[0].target


def test_output_is_deterministic_and_atomic(tmp_path, tok):
    shard = make_shard(tmp_path, tok, StageSpec(stage=1, tau=1.0, k=1), TEMPLATE)
    a, b = tmp_path / "a.jsonl", tmp_path / "out" / "b.jsonl"
    shard_to_openai_jsonl(shard, a, TEMPLATE, fmt=NL2BASH.format)
    shard_to_openai_jsonl(shard, b, TEMPLATE, fmt=NL2BASH.format)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in b.parent.iterdir()) == ["b.jsonl"]  # no temp file left behind


def test_split_prompt_matches_mbpp_system_template():
    # MBPP's template is the official repo's system message; render_prompt strips it
    prompt = MBPP.template.text + "\n\nHere is the description...\nSolution:\n"
    system, user = split_prompt(prompt, MBPP_SYSTEM)
    assert system == MBPP_SYSTEM.strip() and user == "Here is the description...\nSolution:\n"
    assert split_prompt("something else", MBPP_SYSTEM) == (None, "something else")


def test_validator_names_bad_lines(tmp_path):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    lines = [
        json.dumps(good),                                                            # 1 ok
        "{not json",                                                                 # 2
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),               # 3 no assistant
        json.dumps({"messages": [{"role": "robot", "content": "q"},
                                 {"role": "assistant", "content": "a"}]}),          # 4 bad role
        json.dumps({"messages": [{"role": "user", "content": "q", "extra": 1},
                                 {"role": "assistant", "content": "a"}]}),          # 5 extra key
        json.dumps({"messages": []}),                                                # 6 empty list
        json.dumps([1, 2]),                                                          # 7 not an object
        json.dumps({"messages": [{"role": "user", "content": None},
                                 {"role": "assistant", "content": "a", "weight": 2}]}),  # 8
        json.dumps({"messages": [{"role": "user", "content": "q"},
                                 {"role": "assistant", "content": None,
                                  "tool_calls": [{"id": "1"}], "weight": 0}]}),     # 9 ok
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    errors = validate_openai_chat_jsonl(path)
    by_line = {}
    for error in errors:
        prefix, _, problem = error.partition(": ")
        assert prefix.startswith(f"{path}:")
        by_line.setdefault(int(prefix.rsplit(":", 1)[1]), []).append(problem)
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8]
    assert "not valid JSON" in by_line[2][0]
    assert by_line[3] == ["no assistant message"]
    assert "unrecognized role 'robot'" in by_line[4][0]
    assert "unrecognized key(s) ['extra']" in by_line[5][0]
    assert "'messages'" in by_line[6][0]
    assert "not a JSON object" in by_line[7][0]
    assert any("no content" in p for p in by_line[8]) and any("'weight' must be 0 or 1" in p for p in by_line[8])


def test_token_statistics_and_long_example_warning(tmp_path):
    path = tmp_path / "long.jsonl"
    rows = [{"messages": [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": "word " * n},
                          {"role": "assistant", "content": "ok done"}]} for n in (5, 50)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = inspect_openai_chat_jsonl(path, max_tokens=40)
    assert report.errors == []
    # cookbook estimate: 3 priming + per message (3 + role + content); whitespace tokens
    assert report.stats["tokens_per_example"]["min"] == 3 + (3 + 1 + 2) + (3 + 1 + 5) + (3 + 1 + 2)
    assert report.stats["assistant_tokens_per_example"]["max"] == 2
    assert report.stats["examples_over_max_tokens"] == 1
    long_warnings = [w for w in report.warnings if "tokens > 40" in w]
    assert len(long_warnings) == 1 and long_warnings[0].startswith(f"{path}:2:")
    assert any("at least 10" in w for w in report.warnings)
    # a custom tokenizer: a callable returning ids (like tiktoken's encode) or a count
    chars = inspect_openai_chat_jsonl(path, tokenizer=lambda s: list(s), max_tokens=10_000)
    assert chars.stats["assistant_tokens_per_example"]["max"] == len("ok done")
    assert chars.stats["examples_over_max_tokens"] == 0 and validate_openai_chat_jsonl(path, tokenizer=len) == []
