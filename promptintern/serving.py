"""The serving package: the merged model folder plus ``serving.json``, the prompt it expects.

After PromptIntern the model answers from the query alone (or from the query and the template at
``tau_floor``); a server must send exactly that prompt form, nothing more. ``write_serving`` lays
out ``<out>/`` as a Hugging Face model folder (the merged weights and tokenizer, hard-linked from
the merged box, so no copy is made) with ``serving.json`` beside the weights:

.. code-block:: json

    {"prompt_form": "query only", "chat": true,
     "prefix": "<|im_start|>user\\nTask: ", "suffix": "\\nCommand:<|im_end|>\\n<|im_start|>assistant\\n",
     "messages": [{"role": "user", "content": "Task: {query}\\nCommand:"}],
     "stop": ["\\n"], "postprocess": "first-line", "max_new_tokens": 64, ...}

``prefix + query + suffix`` is the exact text to feed (special tokens written as text, as the
tokenizer parses them); ``messages`` is the same prompt for a chat API (``{query}`` is the only
placeholder; the template text is never parsed as a format string). Any engine that loads a
Hugging Face folder (transformers, vLLM, TGI, llama.cpp after conversion) can serve it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from promptintern.prompts import PromptFormat, chat_messages, render

SENTINEL = "\x00QUERY\x00"
_SKIP = {"manifest.json", "merge_check.json"}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def prompt_parts(tokenizer, fmt: PromptFormat, template_text: str, chat: bool) -> tuple[str, str]:
    """The text before and after the query in the prompt the model expects."""
    text = render(fmt, SENTINEL, template_text, (), tokenizer=tokenizer, chat=chat)
    if text.count(SENTINEL) != 1:
        raise ValueError("the prompt does not hold the query exactly once; cannot describe it as prefix + suffix")
    prefix, suffix = text.split(SENTINEL)
    return prefix, suffix


def serving_spec(tokenizer, fmt: PromptFormat, template_text: str, k: int, chat: bool, *, task: str,
                 prompt_form: str, stop: tuple[str, ...], postprocess: str, max_new_tokens: int,
                 merged_model: str) -> dict:
    prefix, suffix = prompt_parts(tokenizer, fmt, template_text, chat)
    messages = chat_messages(fmt, "{query}", template_text, ()) if chat else None
    spec = {
        "task": task,
        "prompt_form": prompt_form,
        "chat": chat,
        "prefix": prefix,
        "suffix": suffix,
        "messages": messages,
        "template_tokens": len(tokenizer(template_text, add_special_tokens=False)["input_ids"]) if template_text else 0,
        "shots": k,
        "stop": list(stop),
        "postprocess": postprocess,
        "max_new_tokens": max_new_tokens,
        "decoding": "greedy",
        "add_special_tokens": False,
        "merged_model": merged_model,  # the merged box this folder was made from
        "usage": "feed prefix + query + suffix (tokenized without adding special tokens), decode greedily, "
                 "cut at the first stop string",
    }
    if k:
        spec["shots_note"] = (f"this prompt form carries {k} examples: render the {k} training rows most similar "
                              f"to the query like the query, each followed by its answer, before the query")
    return spec


def write_serving(merged_dir: Path, spec: dict, out: Path) -> dict:
    """``out``: the merged model's files (hard links) + ``serving.json``."""
    for src in sorted(merged_dir.iterdir()):
        if src.is_file() and src.name not in _SKIP and not src.name.startswith("."):
            _link_or_copy(src, out / src.name)
    (out / "serving.json").write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return spec


def render_from_serving(spec: dict, query: str) -> str:
    """The prompt a server sends for ``query`` (what ``serving.json`` promises)."""
    return spec["prefix"] + query + spec["suffix"]
