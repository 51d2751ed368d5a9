"""Greedy decoding for the benchmark box: a shared-prefix KV cache, and rows that leave when done.

What a serving stack does with a prompt whose head never changes (vLLM's and SGLang's prefix
caching, the providers' cached input tokens), done here for the same reason: the template and
any other token prefix that every prompt shares is prefilled **once**, and its keys and values
are reused by every row of every batch; each row then runs only its own suffix (shots + query).

HF ``model.generate`` can start from a cache, but it pads every batch on the left of the whole
sequence (so the shared prefix is not aligned across rows) and it keeps decoding finished rows
until the longest one ends. Hence this loop, which calls the model's own forward (no sampling, no
logits processors: greedy is an argmax):

* a batch is ``[prefix][pads][suffix]``: the pads sit between the shared prefix and each row's
  suffix, attention 0, and position ids count real tokens only, so every row sees exactly the
  positions and keys it would see alone;
* a row leaves the batch (its cache rows are dropped) when it emits EOS, reaches
  ``max_new_tokens``, or its new tokens contain a stop string (checked on the new tokens only, as
  ``promptintern.generate.StopInCompletion`` does for HF generate);
* the result per row is the list of new token ids up to and including the one that ended it:
  what HF ``generate`` returns for that row before its trailing pads, so the callers'
  post-processing is the same for both paths.

Causal attention makes the shared prefix the same function as recomputing it per row (the same
argument as the trainer's ``share_prompt_prefix``); the results agree with HF ``generate`` up to
fp32 rounding of differently shaped matmuls, which a test checks token for token on the tiny model.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


def common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every row shares, leaving every row at least one own token (the
    last position must run in the batch to give the first next-token logits)."""
    if not rows:
        return 0
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for row in rows[1:]:
        i = 0
        while i < n and row[i] == first[i]:
            i += 1
        n = i
    return max(0, n)


def _cache_keyword(model) -> str:
    """transformers 5 renamed the forward's ``past_key_values`` to ``cache`` (the old name is
    deprecated, gone in 5.40); the pinned range starts at 4.57, which knows only the old one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _returned_cache(out):
    return out["cache"] if "cache" in out else out["past_key_values"]


@dataclass
class PrefixCache:
    """The keys and values of a token prefix, computed once for one row."""

    ids: list[int]
    cache: object  # a transformers Cache holding one row


@torch.no_grad()
def prefill(model, ids: Sequence[int]) -> PrefixCache:
    """Run the shared prefix once; its cache is copied (never changed) by every batch after."""
    out = model(input_ids=torch.tensor([list(ids)]), use_cache=True, logits_to_keep=1)
    return PrefixCache(list(ids), _returned_cache(out))


@torch.no_grad()
def greedy_batch(model, suffixes: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int | None,
                 pad_id: int, prefix: PrefixCache | None = None,
                 stopped: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
    """Greedy-decode one batch of rows, each ``prefix.ids + suffix``; the new token ids of every row
    (up to and including the token that ended it). ``stopped(new_ids)``: the row's stop test
    (e.g. a stop string in its decoded new tokens)."""
    keyword = _cache_keyword(model)
    rows, width = len(suffixes), max(len(s) for s in suffixes)
    p = len(prefix.ids) if prefix is not None else 0
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, p + width), dtype=torch.long)
    mask[:, :p] = 1
    for r, suffix in enumerate(suffixes):
        ids[r, width - len(suffix):] = torch.tensor(list(suffix), dtype=torch.long)
        mask[r, p + width - len(suffix):] = 1
    # positions count real tokens: a row's suffix continues its prefix whatever its padding
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, p:]
    kwargs = {}
    if prefix is not None:
        cache = copy.deepcopy(prefix.cache)
        cache.batch_repeat_interleave(rows)
        kwargs[keyword] = cache
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **kwargs)
    cache = _returned_cache(out)
    token = out.logits[:, -1].argmax(-1)
    last = positions[:, -1]
    active = list(range(rows))  # the batch's rows, by index into ``suffixes``
    new: list[list[int]] = [[] for _ in suffixes]
    while True:
        keep = []
        for j, r in enumerate(active):
            t = int(token[j])
            new[r].append(t)
            if not (t == eos_id or len(new[r]) >= max_new_tokens or (stopped is not None and stopped(new[r]))):
                keep.append(j)
        if not keep:
            return new
        if len(keep) < len(active):  # finished rows leave: their keys and values are dropped
            index = torch.tensor(keep, dtype=torch.long)
            cache.batch_select_indices(index)
            mask, last, token = mask[index], last[index], token[index]
            active = [active[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        last = last + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=last[:, None],
                    use_cache=True, logits_to_keep=1, **{keyword: cache})
        cache = _returned_cache(out)
        token = out.logits[:, -1].argmax(-1)
