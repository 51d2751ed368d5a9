"""Stop strings end a completion on its own text, never on the prompt's.

MBPP's stop is the closing fence ``"\\n```"`` and its prompt ends in a newline: a stop check that
looks at the whole sequence sees the answer's *opening* fence complete the stop string across the
boundary and cuts every answer after one token (what transformers' ``stop_strings`` did, and why
the pipeline checks the completion only)."""

from __future__ import annotations

import torch

from promptintern.generate import StopInCompletion, cut_at_stop, generate
from promptintern.models import load_tokenizer

FENCE = "\n```"


def test_a_stop_string_across_the_prompt_boundary_does_not_stop(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    prompt = tok("Write a function.\nSolution:\n", add_special_tokens=False)["input_ids"]
    answer = tok("```python\ndef f():\n    return 1\n```\nmore", add_special_tokens=False)["input_ids"]
    criterion = StopInCompletion(tok, [FENCE], len(prompt))
    fired = [bool(criterion(torch.tensor([prompt + answer[:n]]), None)[0]) for n in range(1, len(answer) + 1)]
    first = fired.index(True) + 1
    # the opening fence right after the prompt's newline does not stop; the closing one does, at
    # the first prefix of the answer whose text contains it
    assert FENCE in tok.decode(answer[:first]) and FENCE not in tok.decode(answer[:first - 1])
    assert first > 3 and all(fired[first - 1:])


def test_rows_stop_independently(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in ("Q:\n```x = 1\n```", "Q:\n```x = 1 + 2")]
    prompt_length = len(tok("Q:\n", add_special_tokens=False)["input_ids"])
    width = max(map(len, rows))
    batch = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    assert StopInCompletion(tok, [FENCE], prompt_length)(batch, None).tolist() == [True, False]


def test_generate_cuts_where_the_unstopped_text_would_be_cut(tiny_model_dir):
    """Stopping early is only a speed-up: the answers equal the unstopped ones cut at the stop
    string, even when the stop string is the prompt's last character plus the answer's first."""
    prompts = ["b\n", "hello\n", "x = 1\n"]  # the tiny model answers the first with "pppp b a ..."
    free = generate(tiny_model_dir, prompts, max_new_tokens=12, batch_size=2, progress=False)
    first = free.texts[0][:1]
    assert first.isascii() and first.isprintable(), f"the tiny model changed: {free.texts[0]!r}"
    stop = ["\n" + first]  # "\np": completed across the boundary by row 0's first token
    stopped = generate(tiny_model_dir, prompts, max_new_tokens=12, batch_size=2, stop=stop, progress=False)
    assert stopped.texts == [cut_at_stop(t, stop) for t in free.texts]
    assert len(stopped.texts[0]) > 1  # transformers' stop_strings stops row 0 after "p"
    assert all(s <= f for s, f in zip(stopped.output_tokens, free.output_tokens))
