"""The decoding loop (``promptintern.decode``) gives HF ``generate``'s greedy answers, with the
shared prompt prefix prefilled once and finished rows leaving the batch."""

from __future__ import annotations

import pytest
import torch

from promptintern.decode import common_prefix_len, greedy_batch, greedy_stream, prefill
from promptintern.generate import generate
from promptintern.models import load_model, load_tokenizer

TEMPLATE = ("You translate requests into bash commands.\nUse only standard tools: find, grep, sed, awk, "
            "sort, uniq, wc, tar, xargs.\nAnswer with one line.\n\n")
QUERIES = ["list files", "count the lines of every python file under src", "b", "show disk usage",
           "find files bigger than 1M modified today and print their names", "x = 1", "sort names.txt"]


def test_common_prefix_leaves_every_row_one_token():
    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows: the last token runs in the batch
    assert common_prefix_len([[1, 2], [3, 4]]) == 0
    assert common_prefix_len([[7, 8, 9]]) == 2
    assert common_prefix_len([]) == 0


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("stop", [(), ("\n",), ("a",)])
def test_the_loop_gives_hf_generates_answers_token_for_token(tiny_model_dir, batch_size, stop):
    prompts = [f"{TEMPLATE}Request: {q}\nCommand:" for q in QUERIES]
    hf = generate(tiny_model_dir, prompts, max_new_tokens=12, batch_size=batch_size, stop=stop,
                  progress=False, engine="hf")
    cached = generate(tiny_model_dir, prompts, max_new_tokens=12, batch_size=batch_size, stop=stop,
                      progress=False)
    plain = generate(tiny_model_dir, prompts, max_new_tokens=12, batch_size=batch_size, stop=stop,
                     progress=False, prefix_cache=False)
    tok = load_tokenizer(tiny_model_dir)
    template_tokens = len(tok(TEMPLATE, add_special_tokens=False)["input_ids"])
    assert cached.prefix_tokens >= template_tokens - 1 and plain.prefix_tokens == 0 and hf.prefix_tokens == 0
    assert cached.texts == hf.texts and plain.texts == hf.texts
    # token counts against HF one row at a time: in a batch, HF appends a pad to a row that a stop
    # string ended, which the count (up to the first EOS / pad) takes for one more output token
    alone = hf if batch_size == 1 else generate(tiny_model_dir, prompts, max_new_tokens=12, batch_size=1,
                                                stop=stop, progress=False, engine="hf")
    assert cached.output_tokens == plain.output_tokens == alone.output_tokens
    assert len(set(hf.texts)) > 1  # the rows differ: a loop that mixed them up would show


def test_a_finished_row_leaves_the_batch_and_the_others_do_not_change(tiny_model_dir):
    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    rows = [tok(f"{TEMPLATE}Request: {q}\nCommand:", add_special_tokens=False)["input_ids"] for q in QUERIES[:3]]
    shared = common_prefix_len(rows)
    prefix = prefill(model, rows[0][:shared])
    suffixes = [r[shared:] for r in rows]
    free = greedy_batch(model, suffixes, 10, None, tok.pad_token_id, prefix)
    assert all(len(ids) == 10 for ids in free)
    # the first position where row 0's answer and another row's part
    at = min(next(j for j in range(10) if ids[j] != free[0][j]) for ids in free[1:] if ids != free[0])
    mark = free[0][at]

    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args, kw: sizes.append(kw["input_ids"].shape[0]),
                                             with_kwargs=True)
    try:
        # a row whose answer has row 0's token at that position stops right there
        stopped = greedy_batch(model, suffixes, 10, None, tok.pad_token_id, prefix,
                               stopped=lambda ids: len(ids) == at + 1 and ids[at] == mark)
    finally:
        handle.remove()
    for ids, whole in zip(stopped, free):
        assert ids == (whole[:at + 1] if whole[at] == mark else whole)
    leaving = sum(ids[at] == mark for ids in free)
    assert 1 <= leaving < 3
    # one forward per new token (the prefill gives the first); after token ``at``, without the rows
    # that left; none after the last row's tenth token
    assert sizes == [3] * (at + 1) + [3 - leaving] * (9 - at)


@pytest.mark.parametrize("cached", [True, False])
def test_rows_join_the_batch_as_others_finish_and_answer_as_they_would_alone(tiny_model_dir, cached):
    """Continuous batching: with room for 2 rows, a row that ends early gives its slot to the next
    waiting one (prefilled, its cache joined to the batch's left-padded one); every answer is the
    one the row gives decoded alone, and the batch never runs a step with a free slot while rows wait."""
    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    rows = [tok(f"{TEMPLATE}Request: {q}\nCommand:", add_special_tokens=False)["input_ids"] for q in QUERIES]
    shared = common_prefix_len(rows) if cached else 0
    prefix = prefill(model, rows[0][:shared]) if cached else None
    suffixes = [r[shared:] for r in rows]
    full = [greedy_batch(model, [s], 9, None, tok.pad_token_id, prefix)[0] for s in suffixes]
    # answers of different lengths: a row stops once it has its own answer's first ``n`` tokens
    ends = [tuple(ids[:n]) for ids, n in zip(full, [3, 9, 2, 7, 4, 8, 5])]

    def stopped(ids: list[int]) -> bool:
        return tuple(ids) in ends

    alone = [greedy_batch(model, [s], 9, None, tok.pad_token_id, prefix, stopped)[0] for s in suffixes]
    assert len({len(a) for a in alone}) >= 3
    calls: list[tuple[int, int]] = []  # (rows, tokens) of every forward
    handle = model.register_forward_pre_hook(lambda _m, args, kw: calls.append(tuple(kw["input_ids"].shape)),
                                             with_kwargs=True)
    finished: list[int] = []
    try:
        got = greedy_stream(model, suffixes, 9, None, tok.pad_token_id, prefix, stopped, batch_size=2,
                            on_done=finished.append)
    finally:
        handle.remove()
    assert got == alone
    assert sum(finished) == len(suffixes)
    prefills = [i for i, (_, tokens) in enumerate(calls) if tokens > 1]
    steps = [rows for rows, tokens in calls if tokens == 1]
    assert len(prefills) >= 4  # rows joined mid-stream, not in fixed pairs only
    # while rows wait, every step runs full; at the end the batch drains
    assert all(rows == 2 for i, (rows, tokens) in enumerate(calls) if tokens == 1 and i < prefills[-1])
    # fewer steps than static pairs, each running until its longer answer ends
    static = sum(max(len(a) for a in alone[i:i + 2]) - 1 for i in range(0, len(alone), 2))
    assert len(steps) < static


def test_the_prefix_cache_is_not_changed_by_the_batches(tiny_model_dir):
    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    ids = tok(TEMPLATE, add_special_tokens=False)["input_ids"]
    prefix = prefill(model, ids)
    before = [t.clone() for t in _tensors(prefix.cache)]
    suffix = tok("Request: list files\nCommand:", add_special_tokens=False)["input_ids"]
    first = greedy_batch(model, [suffix, suffix[1:]], 6, tok.eos_token_id, tok.pad_token_id, prefix)
    again = greedy_batch(model, [suffix, suffix[1:]], 6, tok.eos_token_id, tok.pad_token_id, prefix)
    assert first == again
    after = _tensors(prefix.cache)
    assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(after, before))


def _tensors(cache) -> list[torch.Tensor]:
    """Every key / value tensor a transformers cache holds."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [t for layer in layers for t in (layer.keys, layer.values)]
    return [t for pair in cache.to_legacy_cache() for t in pair]


def test_a_sliding_window_model_takes_hf_generate_and_answers_the_same(tiny_model_dir, tmp_path):
    """A cache that drops old keys (Mistral's sliding window, here 8 tokens) breaks the loop's
    assumptions (shared prefix, joined batches): generate falls back to HF generate for it."""
    import shutil

    from transformers import MistralConfig, MistralForCausalLM

    from promptintern.generate import sliding_window

    tok = load_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                                             sliding_window=8, max_position_embeddings=512,
                                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(tmp_path)
    for f in tiny_model_dir.iterdir():
        if "token" in f.name:
            shutil.copy(f, tmp_path / f.name)
    assert sliding_window(model) and not sliding_window(load_model(tiny_model_dir))
    prompts = [f"{TEMPLATE}Request: {q}\nCommand:" for q in QUERIES]
    ours = generate(tmp_path, prompts, max_new_tokens=10, batch_size=3, progress=False)
    hf = generate(tmp_path, prompts, max_new_tokens=10, batch_size=3, progress=False, engine="hf")
    assert ours.texts == hf.texts and ours.prefix_tokens == 0
