"""Greedy decoding for the benchmark box: a shared-prefix KV cache and continuous batching.

What a serving stack does with a prompt whose head never changes (vLLM's and SGLang's prefix
caching, the providers' cached input tokens), done here for the same reason: the template and
any other token prefix that every prompt shares is prefilled **once**, and its keys and values
are reused by every row of every batch; each row then runs only its own suffix (shots + query).

HF ``model.generate`` can start from a cache, but it pads every batch on the left of the whole
sequence (so the shared prefix is not aligned across rows) and it keeps decoding finished rows
until the longest one ends: a batch of 8 costs as many steps as its longest answer, and short
answers leave slots idle. Hence this loop, which calls the model's own forward (no sampling, no
logits processors: greedy is an argmax):

* a batch is ``[prefix][pads][suffix]``: the pads sit between the shared prefix and each row's
  suffix, attention 0, and position ids count real tokens only, so every row sees exactly the
  positions and keys it would see alone;
* a row leaves the batch (its cache rows are dropped) when it emits EOS, reaches
  ``max_new_tokens``, or its new tokens contain a stop string (checked on the new tokens only, as
  ``promptintern.generate.StopInCompletion`` does for HF generate);
* the freed slot goes to the next waiting row at once (continuous batching, as vLLM and TGI do):
  the newcomers' ``[prefix][pads][suffix]`` are prefilled together and their cache is joined to
  the batch's, the two aligned on their newest token with masked zero keys on the left (with
  explicit positions and a mask, where a key sits in the cache changes nothing); cache columns
  no remaining row attends to are dropped, so the cache stays as long as its longest live row;
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


def _device(model) -> torch.device:
    return next(model.parameters()).device


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
    out = model(input_ids=torch.tensor([list(ids)], device=_device(model)), use_cache=True, logits_to_keep=1)
    return PrefixCache(list(ids), _returned_cache(out))


@dataclass
class _Batch:
    """The rows being decoded: their cache (one row each, the same length, left-padded), the attention
    mask over it, each row's position of the last token in the cache, the token to feed next (already
    recorded in the row's answer), and which input row each is."""

    cache: object
    mask: torch.Tensor  # (rows, cache length): 1 where a key is real
    last: torch.Tensor  # (rows,)
    token: torch.Tensor  # (rows,)
    rows: list[int]

    def select(self, keep: list[int]) -> None:
        """Keep these batch rows (finished rows leave: their keys and values are dropped), then drop
        the cache columns no remaining row attends to (pads every row has, keys of rows gone)."""
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask, self.last, self.token = self.mask[index], self.last[index], self.token[index]
            self.rows = [self.rows[j] for j in keep]
        used = self.mask.any(0)
        if self.rows and not bool(used.all()):
            columns = used.nonzero().squeeze(1)
            for layer in _layers(self.cache):
                layer.keys, layer.values = layer.keys[:, :, columns], layer.values[:, :, columns]
            self.mask = self.mask[:, columns]

    def join(self, other: "_Batch") -> None:
        """Add ``other``'s rows. The two caches are aligned on their right end (the newest token)
        by zero keys on the left, masked out: causal attention with explicit positions does not
        care where a key sits in the cache, only whether it is masked."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache)):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(other.mask, width, dim=1)])
        self.last, self.token = torch.cat([self.last, other.last]), torch.cat([self.token, other.token])
        self.rows = self.rows + other.rows


def _layers(cache) -> list:
    """The per-layer key/value holders of a transformers ``DynamicCache`` (``.layers`` since 4.56)."""
    layers = getattr(cache, "layers", None)
    if layers is None or not all(hasattr(layer, "keys") for layer in layers):
        raise TypeError(f"continuous batching needs a DynamicCache with per-layer keys/values, got {type(cache)}")
    return layers


def _left_pad(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


@torch.no_grad()
def _prefill_rows(model, keyword: str, suffixes: Sequence[Sequence[int]], rows: list[int], pad_id: int,
                  prefix: PrefixCache | None) -> _Batch:
    """Run ``[prefix][pads][suffix]`` for the new rows at once; their first new token is the batch's
    ``token``."""
    n, width = len(rows), max(len(suffixes[r]) for r in rows)
    p = len(prefix.ids) if prefix is not None else 0
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, p + width), dtype=torch.long)
    mask[:, :p] = 1
    for j, r in enumerate(rows):
        suffix = suffixes[r]
        ids[j, width - len(suffix):] = torch.tensor(list(suffix), dtype=torch.long)
        mask[j, p + width - len(suffix):] = 1
    # positions count real tokens: a row's suffix continues its prefix whatever its padding
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, p:]
    device = _device(model)  # built on the CPU (row by row), moved once
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    kwargs = {}
    if prefix is not None:
        cache = copy.deepcopy(prefix.cache)
        cache.batch_repeat_interleave(n)
        kwargs[keyword] = cache
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **kwargs)
    return _Batch(_returned_cache(out), mask, positions[:, -1], out.logits[:, -1].argmax(-1), list(rows))


@torch.no_grad()
def greedy_stream(model, suffixes: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int | None,
                  pad_id: int, prefix: PrefixCache | None = None,
                  stopped: Callable[[list[int]], bool] | None = None, batch_size: int = 8,
                  on_done: Callable[[int], None] | None = None) -> list[list[int]]:
    """Greedy-decode every row, ``prefix.ids + suffix``, at most ``batch_size`` rows at a time, in
    the order given; the new token ids of every row (up to and including the token that ended it).

    Continuous batching: a row that ends leaves at once and the next waiting rows take its place
    (their suffixes prefilled together, their cache joined to the batch's), so the batch stays
    full until the rows run out instead of waiting for its longest answer. ``stopped(new_ids)``:
    the row's stop test (e.g. a stop string in its decoded new tokens); ``on_done(n)``: called
    with the number of rows that just finished (a progress bar)."""
    keyword = _cache_keyword(model)
    new: list[list[int]] = [[] for _ in suffixes]
    waiting = list(range(len(suffixes)))[::-1]  # popped from the end: the order given
    batch: _Batch | None = None

    def record(b: _Batch) -> list[int]:
        """Append each row's fed-next token to its answer; the batch rows that go on."""
        keep = []
        for j, r in enumerate(b.rows):
            t = int(b.token[j])
            new[r].append(t)
            if not (t == eos_id or len(new[r]) >= max_new_tokens or (stopped is not None and stopped(new[r]))):
                keep.append(j)
        if on_done is not None and len(keep) < len(b.rows):
            on_done(len(b.rows) - len(keep))
        return keep

    while True:
        # fill the free slots (rows that end on their first token free theirs again)
        while waiting and (batch is None or len(batch.rows) < batch_size):
            free = batch_size - (len(batch.rows) if batch is not None else 0)
            newcomers = _prefill_rows(model, keyword, suffixes, [waiting.pop() for _ in range(min(free, len(waiting)))],
                                      pad_id, prefix)
            newcomers.select(record(newcomers))
            if not newcomers.rows:
                continue
            if batch is None or not batch.rows:
                batch = newcomers
            else:
                batch.join(newcomers)
        if batch is None or not batch.rows:
            return new
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
        batch.last = batch.last + 1
        out = model(input_ids=batch.token[:, None], attention_mask=batch.mask, position_ids=batch.last[:, None],
                    use_cache=True, logits_to_keep=1, **{keyword: batch.cache})
        batch.cache, batch.token = _returned_cache(out), out.logits[:, -1].argmax(-1)
        batch.select(record(batch))


def greedy_batch(model, suffixes: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int | None,
                 pad_id: int, prefix: PrefixCache | None = None,
                 stopped: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
    """One static batch: every row starts together and no row joins later (``greedy_stream`` with
    room for all of them)."""
    return greedy_stream(model, suffixes, max_new_tokens, eos_id, pad_id, prefix, stopped,
                         batch_size=max(1, len(suffixes)))
