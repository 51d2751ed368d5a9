"""LLMLingua-2 (promptintern.compress_llmlingua2) on a tiny token classifier built here.

The classifier is random (2 labels, 2 layers of width 32, seed 0) with a WordPiece vocabulary
written for the sample template, so its keep-probabilities are arbitrary but fixed: enough to check
rates, protected spans, determinism and the loading adaptations, not compression quality.
"""

from __future__ import annotations

import random
import re
import string

import pytest

from promptintern.compress import compress_template
from test_compress import ASSERTS, FENCE, PROSE, TEMPLATE


def build_tiny_classifier(out_dir, seed: int = 0):
    """A BertForTokenClassification whose WordPiece vocabulary covers every word of TEMPLATE (and
    any other word through single characters and ``##`` continuations)."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    words = sorted(set(re.findall(r"[a-z]+", TEMPLATE.lower())))
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars]
    vocab += [w for w in words if w not in vocab]
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(out_dir / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                        num_labels=2, pad_token_id=0)
    torch.manual_seed(seed)
    BertForTokenClassification(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return build_tiny_classifier(tmp_path_factory.mktemp("llmlingua2") / "classifier")


def classifier_tokens(model_dir, text: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(model_dir))(text, add_special_tokens=False).input_ids)


# --- compression -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_prose_compresses_toward_the_rate(classifier_dir, rate):
    result = compress_template(PROSE, rate, method="llmlingua2", model_dir=classifier_dir)
    assert result.tokens_before == classifier_tokens(classifier_dir, PROSE) > 60
    assert result.tokens_after == classifier_tokens(classifier_dir, result.text)
    assert result.rate_achieved == pytest.approx(rate, abs=0.1)
    # LLMLingua-2 only drops words: what is left is a subsequence of the (lowercased) words
    remaining = iter(re.findall(r"\w+", PROSE.lower()))
    assert all(word in remaining for word in re.findall(r"\w+", result.text))


def test_keeps_protected_spans_on_their_own_lines(classifier_dir):
    result = compress_template(TEMPLATE, 0.4, method="llmlingua2", model_dir=classifier_dir)
    assert result.tokens_after < result.tokens_before
    for span in (FENCE, "{task_description}", *ASSERTS.splitlines()):
        assert span in result.text
    assert f"\n{FENCE}\n" in result.text and f"\n{ASSERTS}\n" in result.text
    # the prose before the placeholder was compressed, not dropped or kept whole
    prose_part = result.text[:result.text.index("{task_description}")]
    assert 0 < classifier_tokens(classifier_dir, prose_part) < 0.7 * classifier_tokens(classifier_dir, PROSE)


def test_deterministic_across_loads(classifier_dir):
    import promptintern.compress as compress

    first = compress_template(TEMPLATE, 0.5, method="llmlingua2", model_dir=classifier_dir)
    assert compress_template(TEMPLATE, 0.5, method="llmlingua2", model_dir=classifier_dir) == first
    compress._COMPRESSORS.clear()
    assert compress_template(TEMPLATE, 0.5, method="llmlingua2", model_dir=classifier_dir) == first


def test_loading_leaves_the_callers_random_state_alone(classifier_dir):
    """llmlingua's init_llmlingua2 calls seed_everything(42); the loader restores the RNG states."""
    import numpy as np
    import torch

    import promptintern.compress as compress

    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    for seed in (random.seed, np.random.seed, torch.manual_seed):
        seed(1234)
    expected = draw()
    for seed in (random.seed, np.random.seed, torch.manual_seed):
        seed(1234)
    compress._COMPRESSORS.clear()
    compress_template(PROSE, 0.5, method="llmlingua2", model_dir=classifier_dir)  # loads the model
    assert draw() == expected


def test_prepared_copy_stays_a_classifier(classifier_dir, tmp_path):
    """The flow runs prepare_model on compression.model: the copy must keep its classification head."""
    from promptintern.models import model_architectures, prepare_model

    copy = prepare_model(str(classifier_dir), tmp_path / "copy")
    assert model_architectures(copy) == ["BertForTokenClassification"]
    assert (compress_template(TEMPLATE, 0.5, method="llmlingua2", model_dir=copy).text
            == compress_template(TEMPLATE, 0.5, method="llmlingua2", model_dir=classifier_dir).text)


# --- errors ----------------------------------------------------------------------------------

HINT = r"token-classification model folder.*microsoft/llmlingua-2-xlm-roberta-large-meetingbank"


def test_needs_a_classifier_not_the_runs_causal_lm(tiny_model_dir):
    with pytest.raises(ValueError, match=rf"compression.model=.*LlamaForCausalLM.*{HINT}"):
        compress_template(TEMPLATE, 0.5, method="llmlingua2", model_dir=tiny_model_dir)


@pytest.mark.parametrize("model_dir, says", [(None, "no compression.model is set"),
                                             ("no/such/folder", "is not a model folder")])
def test_needs_a_classifier_folder(model_dir, says):
    with pytest.raises(ValueError, match=rf"{says}.*{HINT}"):
        compress_template(TEMPLATE, 0.5, method="llmlingua2", model_dir=model_dir)


@pytest.mark.parametrize("method", ["llmlingua", "selective-context"])
def test_causal_lm_methods_refuse_a_classifier(classifier_dir, method):
    with pytest.raises(ValueError, match="token classifier.*causal LM.*compression.model"):
        compress_template(TEMPLATE, 0.5, method=method, model_dir=classifier_dir)
