"""Selective Context (Li et al., EMNLP 2023, arXiv 2310.06201): drop the lexical units that carry the
least self-information under a causal LM.

    >>> compress_template(template, 0.3, method="selective-context", model_dir="models/smollm2-135m")

Self-information of token x_t is ``-log p(x_t | x_<t)`` under the causal LM in ``model_dir`` (the
run's model; the paper used GPT-2 and LLaMA). The whole template is scored in one pass, protected
spans included, so they give context; only units inside compressible segments can be dropped.
A unit's self-information is the sum over its tokens, as in the paper.

Written here rather than taken from PyPI: ``selective-context`` 0.1.4 pins spacy==3.2.0 and
click==8.0.4 (which conflict with prefect) and loads GPT-2 and spaCy's en_core_web_sm from the hub,
which offline is impossible.

Where we depart from the paper, and why:

* **Units are words**, not spaCy noun phrases or sentences (their default is phrases): offline there
  is no spaCy model. A unit is a run of non-space characters plus the whitespace after it, like a
  spaCy token's ``text_with_ws``, so "min_cost(cost," is one unit and dropping it leaves the spacing
  of its neighbours intact. A dropped unit keeps its trailing whitespace when that holds a line
  break, so the template keeps its lines.
* **Exact token budget instead of a percentile.** The paper keeps the units above the (1 - rate)
  quantile of unit self-information, which fixes the share of *units* kept; long units carry more
  tokens, so the share of tokens kept drifts. We drop units in increasing self-information (ties:
  the later unit first) until at most ``rate`` of the compressible tokens remain, which is what
  ``rate`` means everywhere else in this package.
* Token x_0 is scored after the tokenizer's BOS (else EOS) token, as the paper scores after GPT-2's
  ``<|endoftext|>``; a tokenizer with neither leaves x_0 unscored (its unit is then always kept).
  Texts longer than the model's context are scored in consecutive windows of that length.

Deterministic: one forward pass in eval mode, a stable sort, nothing sampled.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from promptintern.compress_common import cached_compressor

if TYPE_CHECKING:
    from promptintern.compress_common import Segment

_UNIT = re.compile(r"\S+\s*")


@dataclass
class _Unit:
    start: int  # character span in the text; the trailing whitespace is part of the unit
    end: int
    tokens: int = 0
    self_information: float = 0.0


def compress_selective_context(segments: list[Segment], rate: float, model_dir: str, hardware=None) -> str:
    """``segments`` with the compressible units of least self-information dropped until about
    ``rate`` of their tokens remain; protected segments verbatim (module docstring)."""
    text = "".join(s.text for s in segments)
    units, fixed = _units(segments)
    offsets, info = self_information(text, model_dir, hardware)
    owner = _owner_of_each_char(units, len(text))
    for (start, end), value in zip(offsets, info):
        unit = owner[end - 1] if end > start else None  # a token belongs to the unit of its last char
        if unit is not None:
            unit.tokens += 1
            unit.self_information += value

    budget = rate * sum(u.tokens for u in units)
    kept_tokens = sum(u.tokens for u in units)
    dropped = set()
    scored = [i for i, unit in enumerate(units) if unit.tokens]  # a unit no token ends in stays
    for i in sorted(scored, key=lambda i: (units[i].self_information, -i)):
        if kept_tokens <= budget:
            break
        dropped.add(i)
        kept_tokens -= units[i].tokens

    pieces = [(start, text[start:end]) for start, end in fixed]
    for i, unit in enumerate(units):
        piece = text[unit.start:unit.end]
        if i in dropped:
            trailing = piece[len(piece.rstrip()):]
            piece = trailing if "\n" in trailing else ""
        pieces.append((unit.start, piece))
    return "".join(piece for _, piece in sorted(pieces))


def _units(segments: list[Segment]) -> tuple[list[_Unit], list[tuple[int, int]]]:
    """The droppable word units of the compressible segments, and the spans that always stay
    (protected segments, whitespace in front of a segment's first word)."""
    units, fixed, pos = [], [], 0
    for segment in segments:
        end = pos + len(segment.text)
        if not segment.compress:
            fixed.append((pos, end))
        else:
            first_word = len(segment.text) - len(segment.text.lstrip())
            if first_word:
                fixed.append((pos, pos + first_word))
            units += [_Unit(pos + m.start(), pos + m.end()) for m in _UNIT.finditer(segment.text)]
        pos = end
    return units, fixed


def _owner_of_each_char(units: list[_Unit], length: int) -> list[_Unit | None]:
    owner: list[_Unit | None] = [None] * length
    for unit in units:
        owner[unit.start:unit.end] = [unit] * (unit.end - unit.start)
    return owner


def self_information(text: str, model_dir: str, hardware=None) -> tuple[list[tuple[int, int]], list[float]]:
    """Every token of ``text`` as its character span and ``-log p(token | prefix)`` in nats."""
    import torch

    (model, tokenizer), lock = cached_compressor(("selective-context", model_dir, hardware),
                                         lambda: _load(model_dir, hardware))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded.input_ids, [tuple(span) for span in encoded.offset_mapping]
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    window = int(getattr(model.config, "max_position_embeddings", 0) or 2048) - 1
    info: list[float] = []
    with lock, torch.no_grad():
        for begin in range(0, len(ids), window):
            chunk = ids[begin:begin + window]
            prefix = [start_id] if start_id is not None else []
            logits = model(torch.tensor([prefix + chunk], device=model.device)).logits[0].float().cpu()
            log_probs = torch.log_softmax(logits[:-1], dim=-1)
            scored = log_probs.gather(1, torch.tensor(prefix + chunk)[1:, None])[:, 0]
            info += ([] if prefix else [math.inf]) + (-scored).tolist()
    return offsets, info


def _load(model_dir: str, hardware=None):
    from promptintern.models import load_model
    from transformers import AutoTokenizer

    return load_model(model_dir, hardware), AutoTokenizer.from_pretrained(model_dir)
