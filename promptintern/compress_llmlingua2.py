"""LLMLingua-2 (Pan et al., ACL Findings 2024, arXiv 2403.12968): a token-classification encoder
gives every word a keep-probability; the words above a percentile threshold survive.

    >>> compress_template(template, 0.3, method="llmlingua2",
    ...                   model_dir="models/llmlingua-2-xlm-roberta-large-meetingbank")

This runs llmlingua 0.2.2's own ``compress_prompt_llmlingua2`` on a local classifier folder, such as
a copy of microsoft/llmlingua-2-xlm-roberta-large-meetingbank or of its mBERT sibling
(-bert-base-multilingual-cased-meetingbank). No registry reachable offline ships one, so the user
points ``compression.model`` at a folder; without one the method says so (``classifier_error``).

Adaptations to llmlingua 0.2.2 (besides the tiktoken stand-in LLMLingua-1 needs too, see
``promptintern.compress``; LLMLingua-2 also counts each word's tokens with it to weight its
percentile threshold, so "tokens" are the classifier's own):

1. It picks the word-piece convention (``##`` continuations or SentencePiece's ``▁``) by looking for
   "bert-base-multilingual-cased" or "xlm-roberta-large" in its ``model_name`` and raises
   NotImplementedError for any other name; a local folder (content-addressed under artifacts/models/)
   has neither. We read the convention off the tokenizer and set ``model_name`` to the family
   name after loading (the name is used for nothing else by then).
2. ``init_llmlingua2`` calls ``seed_everything(42)``, which reseeds Python, NumPy and torch for the
   whole process, and every compression draws from torch's RNG (its DataLoader seeds workers it
   never starts): we restore the RNG states around both, so that nothing downstream (training
   seeds its own RNGs, but a notebook may not) depends on whether a template was compressed first.

Protected spans: LLMLingua-2's ``force_tokens`` keeps single words, not code blocks or assert lines,
so each compressible segment goes to the classifier as its own context (compressed to ``rate`` on
its own by LLMLingua-2's percentile threshold) and the protected segments are put back between them
verbatim. The cost: the classifier does not see the text on the other side of a protected span.
Each segment keeps its leading and trailing whitespace, which LLMLingua-2 would lose: it rebuilds
its output from the kept word pieces (``convert_tokens_to_string``), so inside a segment a WordPiece
model puts spaces around punctuation and drops line breaks, and an uncased one lowercases.
Deterministic: the model runs in eval mode and the threshold is a percentile, nothing is sampled.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import TYPE_CHECKING

from promptintern.compress_common import cached_compressor, offline_prompt_compressor
from promptintern.config import CompressionConfig

if TYPE_CHECKING:
    from promptintern.compress_common import Segment

CLASSIFIER_HINT = CompressionConfig.CLASSIFIER_HINT

# The names llmlingua 0.2.2 recognises in model_name, one per word-piece convention (fix 1).
_WORDPIECE_FAMILY = "bert-base-multilingual-cased"
_SENTENCEPIECE_FAMILY = "xlm-roberta-large"


def classifier_error(model_dir) -> str:
    """Why ``model_dir`` cannot serve LLMLingua-2, and what to set instead."""
    from promptintern.models import model_architectures

    if model_dir is None:
        got = "no compression.model is set (the run's causal LM cannot label tokens)"
    else:
        architectures = model_architectures(model_dir)
        got = (f"compression.model={str(model_dir)!r} has architectures {architectures}"
               if architectures is not None else f"compression.model={str(model_dir)!r} is not a model folder")
    return f"{got}. {CLASSIFIER_HINT}"


def compress_llmlingua2(segments: list[Segment], rate: float, model_dir: str, hardware=None) -> str:
    """``segments`` with every compressible one compressed to about ``rate`` by the classifier in
    ``model_dir``, the protected ones verbatim (module docstring)."""
    import torch

    parts = [_split_edges(s.text) if s.compress and s.text.strip() else None for s in segments]
    cores = [core for _, core, _ in filter(None, parts)]
    with _rng_states_restored():
        compressor, lock = cached_compressor(("llmlingua2", model_dir, hardware), lambda: _load(model_dir, hardware))
        with lock, torch.no_grad():
            result = compressor.compress_prompt_llmlingua2(
                cores,
                rate=rate,
                use_context_level_filter=False,  # a segment is not a document to be dropped whole
            )
    compressed = iter(result["compressed_prompt_list"])
    out = []
    for segment, part in zip(segments, parts):
        if part is None:
            out.append(segment.text)
        else:
            lead, _, trail = part
            out.append(lead + next(compressed).strip() + trail)
    return "".join(out)


def _split_edges(text: str) -> tuple[str, str, str]:
    """``(leading whitespace, the rest stripped, trailing whitespace)``."""
    match = re.fullmatch(r"(\s*)(.*?)(\s*)", text, re.S)
    return match.group(1), match.group(2), match.group(3)


def _load(model_dir: str, hardware=None):
    compressor = offline_prompt_compressor(model_dir, hardware, use_llmlingua2=True)
    compressor.model_name = _word_piece_family(compressor.tokenizer, model_dir)
    return compressor


def _word_piece_family(tokenizer, model_dir: str) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(backend.model).__name__ == "WordPiece":
        return _WORDPIECE_FAMILY
    if any(piece.startswith("\u2581") for piece in tokenizer.tokenize(" compress the prompt")):
        return _SENTENCEPIECE_FAMILY
    raise ValueError(
        f"compression.model={model_dir!r}: llmlingua 0.2.2's LLMLingua-2 understands WordPiece "
        f"(mBERT) or SentencePiece (XLM-RoBERTa) tokenizers; this one is {type(tokenizer).__name__}"
    )


@contextmanager
def _rng_states_restored():
    """Leave Python's, NumPy's and torch's RNG as they were (fix 2)."""
    import os
    import random

    import numpy as np
    import torch

    py_state, np_state, hash_seed = random.getstate(), np.random.get_state(), os.environ.get("PYTHONHASHSEED")
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py_state)
    np.random.set_state(np_state)
    if hash_seed is None:
        os.environ.pop("PYTHONHASHSEED", None)
    else:
        os.environ["PYTHONHASHSEED"] = hash_seed
