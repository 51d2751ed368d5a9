"""Compress a prompt template to a target rate tau, offline: the paper's compression baselines.

    >>> from promptintern.compress import compress_template
    >>> r = compress_template(template, 0.5, method="llmlingua", model_dir="models/smollm2-135m")
    >>> r.text, r.rate_achieved      # rate = tokens_after / tokens_before, in the model's tokens

Methods (``compress_template`` is the one entry point for all of them):

======================  ==========================================================================
``"llmlingua"``         LLMLingua-1: perplexity-based token dropping (this module)
``"longllmlingua"``     question-aware: contrastive perplexity conditioned on ``question``, sections
                        ranked as documents (this module)
``"llmlingua2"``        LLMLingua-2: a token-classification model labels words keep/drop
                        (``promptintern.compress_llmlingua2``; ``model_dir`` is that classifier)
``"selective-context"`` Selective Context: drop the words of least self-information under the causal
                        LM (``promptintern.compress_selective_context``)
``"api"``               an OpenAI-compatible chat endpoint rewrites the template, the paper's GPT-4
                        baseline (``promptintern.compress_api``; needs ``endpoint``)
``"none"``              identity
======================  ==========================================================================

``model_dir`` is a local model folder (``config.json``): a causal LM for every method but
``"llmlingua2"``; the pipeline uses the model it fine-tunes unless ``compression.model`` names
another. Its tokenizer counts the tokens of every method. Rates: ``tau >= 1`` returns the template
unchanged, ``tau == 0`` returns "".

Protected spans are kept verbatim: fenced code blocks, lines starting with ``assert`` (each with its
line breaks, so they stay on their own lines), ``{placeholders}`` and sections marked
``compressible=False``; every method's output is checked for them. The llmlingua methods get them
as ``compress=False`` segments of llmlingua's structured compression (what
``structured_compress_prompt`` builds from ``<llmlingua, compress=False>`` markup; we build the
segments directly because that markup parser drops any segment containing ``<``).
``tau`` applies to the compressible text; the achieved rate of the whole template is measured.

Sections are compressed together, joined with "\\n\\n" like ``Template.text``: LLMLingua sees them as
one prompt, LongLLMLingua as one document each (its coarse stage may drop a whole section that holds
no protected span).

llmlingua 0.2.2 needs three adaptations here (see DESIGN.md, "llmlingua 0.2.2 offline"):
1. ``PromptCompressor.__init__`` downloads tiktoken's gpt-3.5 encoding, used only to *count* tokens
   (``oai_tokenizer.encode`` for its reported origin/compressed counts): during init we hand it a
   stand-in that counts with the scoring model's own tokenizer.
2. It treats ``past_key_values`` as legacy per-layer ``(k, v)`` pairs (``past[0][0].shape[2]``,
   slicing ``k[:, :, :n]``), which transformers >= 4.57 replaced by ``DynamicCache``: the model is
   wrapped so that it accepts and returns legacy pairs.
3. The model must be a local folder with ``config.json`` (checked before loading).
We also score each prompt in one window (``iterative_size`` = its exact token count): with the
default 200-token windows llmlingua never compresses the last, partial window (upstream issues #73,
#196). Measured on SmolLM2 at tau 0.5: the 125-token MBPP template came back unchanged (rate 1.0,
now 0.50) and a 581-token text kept 79% (now 63%, protected spans included). The cost: within one
window LLMLingua's iterative re-scoring given the already-compressed earlier windows does not
happen; prompts longer than about half the model's context still go through its windows.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence, Union

from pydantic import BaseModel, ConfigDict

# the pieces the backends (compress_llmlingua2, compress_selective_context, compress_api) share with
# this module live in compress_common, so the backends never import this one back
from promptintern.compress_common import _COMPRESSORS, Segment, cached_compressor, offline_prompt_compressor  # noqa: F401
from promptintern.prompts import Template, TemplateSection

log = logging.getLogger(__name__)

METHODS = ("llmlingua", "longllmlingua", "llmlingua2", "selective-context", "api", "none")
# LongLLMLingua ranks and scores the template against a question; a template has none of its own.
DEFAULT_QUESTION = "Follow these instructions to solve the task."

TemplateLike = Union[str, Template, Sequence[TemplateSection]]


class CompressedTemplate(BaseModel):
    """A compressed template and how it was made; token counts use the compressor's tokenizer."""

    model_config = ConfigDict(frozen=True)

    text: str
    method: str
    rate_requested: float
    rate_achieved: float  # tokens_after / tokens_before (1.0 for an empty template)
    tokens_before: int
    tokens_after: int


# ---------------------------------------------------------------------------------------------
# Protected spans
# ---------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*```[^\n]*\n.*?^[ \t]*```[ \t]*$|^[ \t]*```.*\Z", re.M | re.S)
_ASSERT = re.compile(r"^[ \t]*assert\b[^\n]*$", re.M)
_PLACEHOLDER = re.compile(r"\{+[^{}\n]*\}+")  # {name}, and {{escaped}} braces as a whole


def split_protected(text: str) -> list[Segment]:
    """Cut ``text`` into alternating compressible / protected segments (their concatenation is text).

    Block spans (code fences, assert lines) take the line breaks around them, so compression cannot
    glue them to the neighbouring text; overlapping or touching spans merge.
    """
    spans: list[tuple[int, int]] = []
    for pattern in (_FENCE, _ASSERT):
        for m in pattern.finditer(text):
            start, end = m.start(), m.end()
            if start > 0 and text[start - 1] == "\n":
                start -= 1
            if end < len(text) and text[end] == "\n":
                end += 1
            spans.append((start, end))
    spans += [m.span() for m in _PLACEHOLDER.finditer(text)]
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    segments, pos = [], 0
    for start, end in merged:
        if start > pos:
            segments.append(Segment(text[pos:start], True))
        segments.append(Segment(text[start:end], False))
        pos = end
    if pos < len(text):
        segments.append(Segment(text[pos:], True))
    return segments


def _sections(template: TemplateLike) -> list[TemplateSection]:
    if isinstance(template, str):
        return [TemplateSection(text=template)]
    if isinstance(template, Template):
        return list(template.sections)
    return [s if isinstance(s, TemplateSection) else TemplateSection.model_validate(s) for s in template]


def _documents(sections: list[TemplateSection]) -> list[list[Segment]]:
    """One segment list per non-empty section, stripped as ``Template.text`` strips them."""
    docs = []
    for section in sections:
        text = section.text.strip()
        if text:
            docs.append(split_protected(text) if section.compressible else [Segment(text, False)])
    return docs


def one_prompt(docs: list[list[Segment]]) -> list[Segment]:
    """The sections as one segment list, joined by protected "\\n\\n" as ``Template.text`` joins them
    (so no compressor can glue two sections into one line)."""
    merged: list[Segment] = []
    for doc in docs:
        merged += ([Segment("\n\n", False)] if merged else []) + doc
    return merged


# ---------------------------------------------------------------------------------------------
# Loaded models, shared by every method
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# llmlingua, adapted (see the module docstring)
# ---------------------------------------------------------------------------------------------


class _LegacyCacheLM:
    """The causal LM as llmlingua 0.2.2 expects it: ``past_key_values`` as ``(k, v)`` pairs (fix 2).

    llmlingua calls ``model(ids, attention_mask=..., past_key_values=..., use_cache=True)`` and then
    reads ``out.past_key_values[0][0].shape[2]`` and slices each ``k, v`` itself; transformers 5 takes
    and returns a ``DynamicCache``. Converting at this boundary leaves both sides unchanged.
    """

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, input_ids, past_key_values=None, **kwargs):
        from transformers import DynamicCache

        if past_key_values is not None and not hasattr(past_key_values, "get_seq_length"):
            past_key_values = DynamicCache([(k, v) for k, v in past_key_values])
        out = self.model(input_ids, past_key_values=past_key_values, **kwargs)
        cache = out.past_key_values
        if cache is not None and hasattr(cache, "layers"):
            out.past_key_values = tuple((layer.keys, layer.values) for layer in cache.layers)
        return out

    def __getattr__(self, name):  # anything else (config, device, ...) is the model's
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


def _compressor(model_dir: str, hardware=None):
    """LLMLingua's and LongLLMLingua's PromptCompressor: they differ only in ``compress_prompt``'s
    options, so they share it."""
    return cached_compressor((model_dir, hardware), lambda: _load_compressor(model_dir, hardware))


def _load_compressor(model_dir: str, hardware=None):
    compressor = offline_prompt_compressor(model_dir, hardware)
    compressor.model = _LegacyCacheLM(compressor.model)
    return compressor


@lru_cache(maxsize=None)
def _tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids) if text else 0


def _segs_kwargs(docs: list[list[Segment]], rate: float) -> dict:
    """The structured-compression segments of ``docs`` as llmlingua's keyword arguments."""
    return {
        "context_segs": [[s.text for s in doc] for doc in docs],
        "context_segs_rate": [[rate if s.compress else 1.0 for s in doc] for doc in docs],
        "context_segs_compress": [[s.compress for s in doc] for doc in docs],
    }


def _longllmlingua_keep(compressor, docs: list[list[Segment]], rate: float, question: str,
                        tokens_before: int) -> list[list[Segment]]:
    """LongLLMLingua's coarse stage: rank sections by p(question | section), keep them in their
    order up to rate x tokens + 100 (its default budget); sections with protected spans stay."""
    texts = ["".join(s.text for s in doc) for doc in docs]
    _, _, used = compressor.control_context_budget(
        texts,
        [compressor.get_token_length(t) for t in texts],
        rate * tokens_before,
        question=question,
        condition_in_question="after",
        reorder_context="original",  # a template is read in order ("sort" would shuffle it)
        rank_method="longllmlingua",
        context_budget="+100",
        **_segs_kwargs(docs, rate),
        strict_preserve_uncompressed=True,
    )
    compressor.context_idxs.clear()  # llmlingua appends each ranking here and never reads it back
    return [docs[i] for i in used]


def _window(compressor, texts: list[str], question: str | None) -> int:
    """One window of exactly the prompt's length, as llmlingua will tokenize it (module docstring).

    llmlingua places its windows assuming the first one is full: a window longer than the prompt
    shifts every per-segment rate (and keeps everything), hence the exact count. A question
    (LongLLMLingua) is tokenized in front of the prompt and its tokens are not in the window.
    Prompts longer than about half the model's context keep llmlingua's own windowing.
    """
    joined = "\n\n".join(([question] if question else []) + texts)
    n = len(compressor.tokenizer(joined, add_special_tokens=False).input_ids)
    if question:
        n -= compressor.get_prefix_length(question + "\n\n", texts[0])
    context = compressor.max_position_embeddings
    return max(1, min(n, max(context // 4, (context - 256) // 2)))


def _run_llmlingua(docs: list[list[Segment]], rate: float, method: str, model_dir: str,
                   question: str, tokens_before: int, hardware=None) -> str:
    import torch

    compressor, lock = _compressor(model_dir, hardware)
    with lock, torch.no_grad():
        if method == "llmlingua":  # one prompt: the sections and their "\n\n" joints as one context
            docs, options = [one_prompt(docs)], {"rank_method": "llmlingua"}
        else:
            # LongLLMLingua as its README runs it, less what does not fit a template: the question
            # is not appended to the result, no sentence-level filter (it needs NLTK punkt, absent
            # offline), no dynamic_context_compression_ratio (ignored for structured segments).
            question = question or DEFAULT_QUESTION
            if len(docs) > 1:
                docs = _longllmlingua_keep(compressor, docs, rate, question, tokens_before)
            options = {
                "rank_method": "longllmlingua",
                "question": question,
                "condition_in_question": "after_condition",
                "condition_compare": True,  # tokens scored by perplexity contrast given the question
                "concate_question": False,
            }
        texts = ["".join(s.text for s in doc) for doc in docs]
        window = _window(compressor, texts, options.get("question"))
        result = compressor.compress_prompt(
            texts,
            rate=rate,
            iterative_size=window,
            use_context_level_filter=False,  # LongLLMLingua's coarse stage ran above
            **_segs_kwargs(docs, rate),
            **options,
        )
    return result["compressed_prompt"]


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------


def compress_template(
    template: TemplateLike,
    rate: float,
    method: str = "llmlingua",
    model_dir: str | Path | None = None,
    question: str = "",
    *,
    endpoint: str | None = None,
    api_model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    api_timeout_s: float = 120.0,
    hardware=None,
) -> CompressedTemplate:
    """Compress ``template`` (a str, a ``Template`` or its sections) to about ``rate`` of its tokens.

    ``model_dir`` is a model folder with ``config.json``: its tokenizer counts tokens (for every
    method); for the llmlingua methods and Selective Context it is the causal LM that scores them,
    for LLMLingua-2 the token classifier that labels them. ``question`` is LongLLMLingua's question
    (default: ``DEFAULT_QUESTION``); the other methods ignore it. ``endpoint`` (a base URL such as
    http://host:8000/v1), ``api_model``, ``api_key_env`` (the *name* of the variable holding the key)
    and ``api_timeout_s`` configure the ``"api"`` method. ``rate`` 0 gives "" whatever the method.
    Deterministic for every local method; ``"api"`` asks at temperature 0. ``hardware`` (a
    ``promptintern.device.Hardware``; None: the CPU in fp32): where the local methods run their model.
    """
    if method not in METHODS:
        raise ValueError(f"compressor={method!r}: unknown compression method; use one of {METHODS}")
    if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate={rate!r}: the compression rate must be within [0, 1]")
    _check_model_dir(method, model_dir)
    if method == "api":
        from promptintern.compress_api import ENDPOINT_HINT

        if not endpoint:
            raise ValueError(f"compression.endpoint is not set: {ENDPOINT_HINT}")
        if not api_model:
            raise ValueError(f"compression.api_model is not set: {ENDPOINT_HINT}")
    model_dir = str(Path(model_dir).resolve())
    docs = _documents(_sections(template))
    original = "\n\n".join("".join(s.text for s in doc) for doc in docs)
    tokenizer = _tokenizer(model_dir)
    before = _count(tokenizer, original)

    has_compressible = any(s.compress and s.text.strip() for doc in docs for s in doc)
    if rate == 0.0:
        text = ""
    elif rate >= 1.0 or method == "none" or not has_compressible:
        text = original
    else:
        if method in ("llmlingua", "longllmlingua"):
            text = _run_llmlingua(docs, float(rate), method, model_dir, question, before, hardware)
        elif method == "llmlingua2":
            from promptintern.compress_llmlingua2 import compress_llmlingua2

            text = compress_llmlingua2(one_prompt(docs), float(rate), model_dir, hardware)
        elif method == "selective-context":
            from promptintern.compress_selective_context import compress_selective_context

            text = compress_selective_context(one_prompt(docs), float(rate), model_dir, hardware)
        else:
            from promptintern.compress_api import compress_via_api

            text = compress_via_api(one_prompt(docs), float(rate), endpoint, api_model, api_key_env, api_timeout_s)
        if "\ufffd" in text and "\ufffd" not in original:
            # what is left of a multi-byte character when byte-level BPE dropped part of it
            text = text.replace("\ufffd", "")
        hint = (f"; the model {api_model!r} at {endpoint} was asked to keep it verbatim but did not "
                "(try a stronger model or a higher rate)" if method == "api" else "")
        _check_protected(docs, text, hint)
    after = _count(tokenizer, text)
    log.info("compressed a template with %s at rate %.2f: %d -> %d tokens", method, rate, before, after)
    return CompressedTemplate(
        text=text,
        method=method,
        rate_requested=float(rate),
        rate_achieved=after / before if before else 1.0,
        tokens_before=before,
        tokens_after=after,
    )


# Methods whose model_dir must be a causal LM (it scores the tokens); "none" and "api" only count
# tokens with it, "llmlingua2" needs a token classifier.
_SCORED_BY_CAUSAL_LM = ("llmlingua", "longllmlingua", "selective-context")


def _check_model_dir(method: str, model_dir: str | Path | None) -> None:
    from promptintern.models import is_token_classifier, model_architectures

    architectures = None if model_dir is None else model_architectures(model_dir)
    if method == "llmlingua2":
        if not is_token_classifier(architectures):
            from promptintern.compress_llmlingua2 import classifier_error

            raise ValueError(f"method='llmlingua2': {classifier_error(model_dir)}")
    elif architectures is None:
        raise ValueError(
            f"model_dir={model_dir!r}: need a local causal-LM folder with config.json "
            "(e.g. from promptintern.models.prepare_model); its tokenizer counts the tokens"
        )
    elif method in _SCORED_BY_CAUSAL_LM and is_token_classifier(architectures):
        raise ValueError(
            f"model_dir={str(model_dir)!r} is a token classifier {architectures}; method={method!r} "
            "scores tokens with a causal LM: leave compression.model unset (the run's model) or name a causal LM"
        )


def _check_protected(docs: list[list[Segment]], text: str, hint: str = "") -> None:
    """Every protected span must appear verbatim and in order (the local methods keep them by
    construction; an API model may not)."""
    pos = 0
    for doc in docs:
        for seg in doc:
            if seg.compress:
                continue
            found = text.find(seg.text, pos)
            if found < 0:
                raise RuntimeError(f"compression lost a protected span: {seg.text[:80]!r}{hint}")
            pos = found + len(seg.text)
