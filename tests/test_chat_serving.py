"""Chat models (prompts through the model's chat template) and the serving folder (serving.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from promptintern.datasets import get_task
from promptintern.models import load_tokenizer
from promptintern.prompts import chat_turn_end, render, render_target, use_chat
from promptintern.serving import render_from_serving
from promptintern.train import IGNORE_INDEX, encode_row

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "unit-conversion" / "task.yaml"
# ChatML-like; a turn ends in the tiny tokenizer's EOS
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="module")
def chat_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with a chat template, as a separate model folder."""
    out = tmp_path_factory.mktemp("tiny-chat") / "model"
    shutil.copytree(tiny_model_dir, out)
    tokenizer = load_tokenizer(out)
    tokenizer.chat_template = CHAT
    tokenizer.save_pretrained(out)
    return out


def test_auto_uses_a_chat_template_only_when_the_model_has_one(tiny_model_dir, chat_model_dir):
    plain, chat = load_tokenizer(tiny_model_dir), load_tokenizer(chat_model_dir)
    assert use_chat("auto", chat, "t") and not use_chat("auto", plain, "t") and not use_chat("off", chat, "t")
    with pytest.raises(ValueError, match=r"chat=on, but the model's tokenizer has no chat template"):
        use_chat("on", plain, "stage 1")


def test_chat_prompt_is_system_template_and_user_examples_plus_query(chat_model_dir):
    tokenizer = load_tokenizer(chat_model_dir)
    fmt = get_task("nl2bash").format
    prompt = render(fmt, "list files", "TEMPLATE", [("show disk", "df -h")], tokenizer=tokenizer, chat=True)
    assert prompt == ("<|system|>\nTEMPLATE<|endoftext|>\n<|user|>\nExamples:\n\nTask: show disk\nCommand: df -h"
                      "\n\nTask: list files\nCommand:<|endoftext|>\n<|assistant|>\n")
    assert render(fmt, "q", "", (), tokenizer=tokenizer, chat=True) == "<|user|>\nTask: q\nCommand:<|endoftext|>\n<|assistant|>\n"
    # the answer is the bare target: EOS (appended by training) closes the turn
    assert chat_turn_end(tokenizer) == "" and render_target(fmt, "ls", tokenizer=tokenizer, chat=True) == "ls"
    assert render_target(fmt, "ls") == " ls"  # plain text keeps the format's target prefix


def test_a_turn_end_other_than_eos_is_trained_too(chat_model_dir, tmp_path):
    tokenizer = load_tokenizer(chat_model_dir)
    tokenizer.chat_template = CHAT.replace("<|endoftext|>", "<end>")
    assert chat_turn_end(tokenizer) == "<end>"
    assert render_target(get_task("nl2bash").format, "ls", tokenizer=tokenizer, chat=True) == "ls<end>"


def test_masking_covers_the_whole_chat_prompt_and_only_it(chat_model_dir):
    tokenizer = load_tokenizer(chat_model_dir)
    fmt = get_task("nl2bash").format
    prompt = render(fmt, "list files", "TEMPLATE", (), tokenizer=tokenizer, chat=True)
    target = render_target(fmt, "ls -la", tokenizer=tokenizer, chat=True)
    ids, labels = encode_row(tokenizer, prompt, target, 512)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    trained = [t for t in labels if t != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "ls -la<|endoftext|>" and trained == ids[n_prompt:]


def _rows(folder: Path, kind: str) -> list[dict]:
    shards = [d for d in (folder / "shards").iterdir() if d.is_dir() and not d.name.startswith(".")]
    return [pq.read_table(d / "shard.parquet").to_pylist()[0] | {"meta": pq.read_schema(d / "shard.parquet").metadata}
            for d in shards]


@pytest.mark.parametrize("chat", [False, True], ids=["plain-model", "chat-model"])
def test_serving_json_gives_exactly_the_prompt_the_model_was_benchmarked_with(
        prefect_harness, tiny_model_dir, chat_model_dir, tmp_path, chat):
    """The example task end to end; serving.json's prefix + query + suffix is, byte for byte, the
    prompt the benchmark fed the internalized model."""
    from flows.dag import promptintern
    from promptintern.pipeline import benchmark_prompts

    model = chat_model_dir if chat else tiny_model_dir
    result = promptintern(preset="tiny", task=str(EXAMPLE), model=str(model), artifact_root=str(tmp_path))
    serving = Path(result["serving_dir"])
    spec = json.loads((serving / "serving.json").read_text())
    assert spec["chat"] is chat and spec["prompt_form"] == "query only" and spec["shots"] == 0
    assert spec["stop"] == ["\n"] and spec["postprocess"] == "first-line"
    assert (serving / "config.json").is_file() and (serving / "model.safetensors").is_file()
    assert load_tokenizer(serving) is not None  # a Hugging Face folder

    evals = json.loads((Path(result["run_dir"]) / "results.json").read_text())["eval_dirs"]
    inputs = json.loads((tmp_path / evals["promptintern"] / "manifest.json").read_text())["inputs"]
    _, test, _, prompts, as_chat = benchmark_prompts(tmp_path / inputs["model_dir"], tmp_path / inputs["dataset_dir"], None,
                                            None, 0, "promptintern", inputs["chat"])
    assert [render_from_serving(spec, row.query) for row in test] == prompts and as_chat is chat
    metrics = json.loads((tmp_path / evals["promptintern"] / "metrics.json").read_text())
    assert metrics["prompt_style"] == ("chat" if chat else "plain")
    if chat:
        assert spec["messages"] == [{"role": "user", "content": "Request: {query}\nAnswer:"}]
        assert spec["prefix"] == "<|user|>\nRequest: " and spec["suffix"].endswith("<|assistant|>\n")
        stage1 = max(_rows(tmp_path, "shards"), key=lambda r: r["k"])
        assert stage1["prompt"].startswith("<|system|>\nYou are a careful assistant")
        assert "<|user|>\nExamples:" in stage1["prompt"] and not stage1["target"].startswith(" ")
        assert json.loads(stage1["meta"][b"promptintern.stage"])["prompt_style"] == "chat"
