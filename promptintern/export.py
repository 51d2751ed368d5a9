"""Export for closed models: a stage shard as OpenAI chat fine-tuning JSONL.

The paper fine-tunes GPT-3.5/4 through OpenAI's fine-tuning API, which takes one JSON object a
line, each ``{"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role":
"assistant", ...}]}``. ``shard_to_openai_jsonl`` turns one stage's shard (see
``promptintern.shards``) into that file:

* system    -- the stage's template compressed to tau_t, when the row's prompt starts with it
               (``template_text``; e.g. MBPP's ``SYSTEM``, as the official repo sends it);
               otherwise ``system_prompt`` if given, else no system message (a tau = 0 stage);
* user      -- the rest of the prompt: the k_t shots and the query with its answer cue;
* assistant -- the target, without the prompt format's ``target_prefix``.

With a system message, ``system + fmt.separator + user == prompt`` exactly; without one,
``user == prompt``.

``validate_openai_chat_jsonl`` runs the format checks of OpenAI's published data-preparation
cookbook ("Data preparation and analysis for chat model fine-tuning") and returns the errors as
``path:line: problem``; ``inspect_openai_chat_jsonl`` also returns the cookbook's token-count
statistics and warnings (too-long examples, too few examples).

    python -m promptintern.export SHARD.parquet OUT.jsonl [--template FILE] [--system TEXT]
    python -m promptintern.export --validate OUT.jsonl
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from promptintern.prompts import PromptFormat

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "function", "tool")
MESSAGE_KEYS = ("role", "content", "name", "weight", "function_call", "tool_calls")
DEFAULT_MAX_TOKENS = 16_385  # gpt-3.5-turbo's context window
MIN_EXAMPLES = 10  # OpenAI rejects a training file with fewer examples
DEFAULT_SEPARATOR = PromptFormat(query_prefix="", answer_cue="").separator


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def split_prompt(prompt: str, template_text: str, separator: str = DEFAULT_SEPARATOR) -> tuple[str | None, str]:
    """(system, user) for one rendered prompt; system is None when the prompt lacks the template.

    ``render_prompt`` writes ``template_text.strip()`` then ``separator``, so that is what must lead
    the prompt for the split to happen.
    """
    template = template_text.strip()
    head = template + separator
    if template and prompt.startswith(head) and len(prompt) > len(head):
        return template, prompt[len(head):]
    return None, prompt


def strip_target_prefix(target: str, target_prefix: str | None) -> str:
    """The target without the prompt format's prefix; ``None`` strips any leading whitespace."""
    if target_prefix is None:
        return target.lstrip()
    return target[len(target_prefix):] if target_prefix and target.startswith(target_prefix) else target


def shard_to_openai_jsonl(
    shard_path: str | Path,
    out_path: str | Path,
    template_text: str = "",
    system_prompt: str | None = None,
    fmt: PromptFormat | None = None,
) -> dict:
    """Write one stage shard as OpenAI chat fine-tuning JSONL; returns summary statistics.

    ``template_text`` is the template the stage's prompts were rendered with (compressed to tau_t;
    "" for a query-only stage). ``fmt`` is the task's ``PromptFormat``: its ``separator`` is
    removed between system and user, its ``target_prefix`` from the assistant message; without it
    the default separator ("\\n\\n") is assumed and leading whitespace is stripped from targets.
    Rows keep the shard's order; the file is written atomically (temp file + ``os.replace``).
    """
    from promptintern.shards import read_shard

    table = read_shard(Path(shard_path))
    pairs = zip(table.column("prompt").to_pylist(), table.column("target").to_pylist())
    return pairs_to_openai_jsonl(pairs, out_path, template_text, system_prompt, fmt, source=str(shard_path))


def pairs_to_openai_jsonl(
    pairs,
    out_path: str | Path,
    template_text: str = "",
    system_prompt: str | None = None,
    fmt: PromptFormat | None = None,
    source: str = "",
) -> dict:
    """``shard_to_openai_jsonl`` for (plain-text prompt, target) pairs that are not in a shard file
    (a chat-rendered shard is exported from its rows rendered as plain text)."""
    out_path = Path(out_path)
    separator = fmt.separator if fmt is not None else DEFAULT_SEPARATOR
    target_prefix = fmt.target_prefix if fmt is not None else None
    lines: list[str] = []
    chars: dict[str, list[int]] = {"system": [], "user": [], "assistant": []}
    split_rows = 0
    for prompt, target in pairs:
        system, user = split_prompt(prompt, template_text, separator)
        if system is not None:
            split_rows += 1
        elif system_prompt is not None:
            system = system_prompt
        messages = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": strip_target_prefix(target, target_prefix)})
        for message in messages:
            chars[message["role"]].append(len(message["content"]))
        lines.append(json.dumps({"messages": messages}, ensure_ascii=False))

    _write_atomic(out_path, "".join(line + "\n" for line in lines))
    stats = {
        "path": str(out_path),
        "shard": source,
        "rows": len(lines),
        "rows_with_system": len(chars["system"]),
        "rows_template_split": split_rows,
        "mean_chars": {role: float(np.mean(v)) if v else 0.0 for role, v in chars.items()},
    }
    if template_text.strip() and split_rows < len(lines):
        log.warning("%s: %d of %d prompts do not start with the given template; their system message "
                    "is %s", source, len(lines) - split_rows, len(lines),
                    "system_prompt" if system_prompt is not None else "omitted")
    return stats


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


@dataclass
class ChatJsonlReport:
    """What ``inspect_openai_chat_jsonl`` found: errors (the API would reject), warnings, stats."""

    path: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def whitespace_tokens(text: str) -> int:
    return len(text.split())


def _counter(tokenizer: Callable | None) -> Callable[[str], int]:
    """A str -> int token counter from a callable returning an int, a list of ids or an encoding."""
    if tokenizer is None:
        return whitespace_tokens

    def count(text: str) -> int:
        out = tokenizer(text)
        if isinstance(out, (int, np.integer)):
            return int(out)
        if hasattr(out, "keys") and "input_ids" in out:  # a transformers BatchEncoding
            out = out["input_ids"]
        return len(out)

    return count


def message_errors(message: Any) -> list[str]:
    """Problems of one message, per the cookbook's checks plus the documented optional keys."""
    if not isinstance(message, dict):
        return [f"message is {type(message).__name__}, not an object"]
    problems = []
    if "role" not in message:
        problems.append("message has no 'role'")
    role = message.get("role")
    if "role" in message and role not in ROLES:
        problems.append(f"unrecognized role {role!r} (allowed: {', '.join(ROLES)})")
    extra = [key for key in message if key not in MESSAGE_KEYS]
    if extra:
        problems.append(f"unrecognized key(s) {extra} in a {role!r} message (allowed: {', '.join(MESSAGE_KEYS)})")
    calls = message.get("function_call") or message.get("tool_calls")
    content = message.get("content")
    if content is None:
        if not (role == "assistant" and calls):
            problems.append(f"{role!r} message has no content"
                            + ("" if role == "assistant" else " (null only allowed for an assistant function/tool call)"))
    elif not isinstance(content, str):
        problems.append(f"{role!r} message content is {type(content).__name__}, not a string")
    elif not content and not calls:
        problems.append(f"{role!r} message content is empty")
    if "name" in message and not isinstance(message["name"], str):
        problems.append("'name' is not a string")
    if "weight" in message:
        if role != "assistant":
            problems.append(f"'weight' is only allowed on assistant messages, not {role!r}")
        elif message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
            problems.append(f"'weight' must be 0 or 1, not {message['weight']!r}")
    return problems


def example_tokens(messages: list[dict], count: Callable[[str], int]) -> tuple[int, int]:
    """(total, assistant) tokens of one example, the cookbook's way.

    3 tokens of overhead a message, every string value counted, 1 more for a name, and 3 for the
    reply priming; assistant tokens count only the assistant contents.
    """
    total, assistant = 3, 0
    for message in messages:
        total += 3
        for key, value in message.items():
            if isinstance(value, str):
                total += count(value)
                if key == "name":
                    total += 1
        if message.get("role") == "assistant" and isinstance(message.get("content"), str):
            assistant += count(message["content"])
    return total, assistant


def _distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    return {"min": float(arr.min()), "max": float(arr.max()), "mean": float(arr.mean()),
            "median": float(np.median(arr)), "p5": float(np.quantile(arr, 0.05)),
            "p95": float(np.quantile(arr, 0.95))}


def inspect_openai_chat_jsonl(
    path: str | Path,
    tokenizer: Callable | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> ChatJsonlReport:
    """Check a chat fine-tuning file; errors and warnings name ``path:line``.

    ``tokenizer`` maps a string to a token count (or a list of ids, e.g. ``tiktoken``'s
    ``encoding.encode``, or a transformers tokenizer); the default counts whitespace-separated
    words. Examples longer than ``max_tokens`` are warned about, not errors: the API truncates them.
    """
    path = Path(path)
    report = ChatJsonlReport(path=str(path))
    if not path.is_file():
        report.errors.append(f"{path}: file not found")
        return report
    count = _counter(tokenizer)
    raw = path.read_bytes().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()  # the newline that ends the last line
    totals: list[int] = []
    assistants: list[int] = []
    n_messages: list[int] = []
    no_system = no_user = too_long = 0
    for lineno, data in enumerate(raw, start=1):
        where = f"{path}:{lineno}"
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as err:
            report.errors.append(f"{where}: not UTF-8 ({err.reason} at byte {err.start})")
            continue
        if not line.strip():
            report.errors.append(f"{where}: empty line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            report.errors.append(f"{where}: not valid JSON ({err.msg}, column {err.colno})")
            continue
        if not isinstance(obj, dict):
            report.errors.append(f"{where}: example is {type(obj).__name__}, not a JSON object")
            continue
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            report.errors.append(f"{where}: missing or empty 'messages' list")
            continue
        problems = [f"messages[{i}]: {p}" for i, m in enumerate(messages) for p in message_errors(m)]
        if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
            problems.append("no assistant message")
        report.errors.extend(f"{where}: {p}" for p in problems)
        if problems:
            continue
        total, assistant = example_tokens(messages, count)
        totals.append(total)
        assistants.append(assistant)
        n_messages.append(len(messages))
        no_system += not any(m["role"] == "system" for m in messages)
        no_user += not any(m["role"] == "user" for m in messages)
        if total > max_tokens:
            too_long += 1
            report.warnings.append(f"{where}: {total} tokens > {max_tokens}; fine-tuning truncates it")
    if len(raw) < MIN_EXAMPLES:
        report.warnings.append(f"{path}: {len(raw)} example(s); OpenAI fine-tuning needs at least {MIN_EXAMPLES}")
    report.stats = {
        "examples": len(raw),
        "valid_examples": len(totals),
        "examples_without_system": no_system,
        "examples_without_user": no_user,
        "examples_over_max_tokens": too_long,
        "max_tokens": max_tokens,
        "tokenizer": "whitespace" if tokenizer is None else getattr(tokenizer, "__name__", type(tokenizer).__name__),
        "messages_per_example": _distribution(n_messages),
        "tokens_per_example": _distribution(totals),
        "assistant_tokens_per_example": _distribution(assistants),
        "total_tokens": int(sum(min(t, max_tokens) for t in totals)),
    }
    return report


def validate_openai_chat_jsonl(
    path: str | Path,
    tokenizer: Callable | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> list[str]:
    """The format errors of a chat fine-tuning file (``path:line: problem``); [] when it is valid.

    Warnings (examples over ``max_tokens``, too few examples) are logged, not returned; call
    ``inspect_openai_chat_jsonl`` for them and the token statistics.
    """
    report = inspect_openai_chat_jsonl(path, tokenizer=tokenizer, max_tokens=max_tokens)
    for warning in report.warnings:
        log.warning(warning)
    return report.errors


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m promptintern.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="SHARD.parquet OUT.jsonl, or with --validate: FILE.jsonl...")
    parser.add_argument("--validate", action="store_true", help="only check chat JSONL files")
    parser.add_argument("--template", type=Path, help="file with the stage's (compressed) template text")
    parser.add_argument("--system", help="system message for rows whose prompt lacks the template")
    parser.add_argument("--task", help="dataset name, for its prompt format (separator, target prefix)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.validate:
        bad = 0
        for p in args.paths:
            report = inspect_openai_chat_jsonl(p, max_tokens=args.max_tokens)
            for line in report.errors + [f"warning: {w}" for w in report.warnings]:
                print(line)
            print(json.dumps(report.stats, indent=2))
            bad += bool(report.errors)
        return 1 if bad else 0
    if len(args.paths) != 2:
        parser.error("export takes SHARD.parquet OUT.jsonl")
    fmt = None
    if args.task:
        from promptintern.datasets import get_task

        fmt = get_task(args.task).format
    template = args.template.read_text(encoding="utf-8") if args.template else ""
    stats = shard_to_openai_jsonl(args.paths[0], args.paths[1], template, args.system, fmt)
    print(json.dumps(stats, indent=2))
    errors = validate_openai_chat_jsonl(args.paths[1], max_tokens=args.max_tokens)
    for line in errors:
        print(line)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
