"""Cost accounting: what a method's prompts would cost on a paid API, and how much PromptIntern saves.

The paper reports, per method, input tokens per query, seconds per instance and the API cost of its
prompts, then "cost saved" against full-prompt inference. Here:

* ``prices.json`` (beside this module, editable) holds USD prices per 1K input / output tokens: the
  OpenAI list prices of 2024-06, when the paper was written, and, for the models that list one, the
  price of a **cached** input token (prompt caching: OpenAI bills a cached prefix at half the input
  price, Anthropic a cache read at a tenth), each with its own date and source. ``load_prices(path)``
  reads it or any file of the same shape.
* ``count_openai_tokens(texts)`` counts tokens with tiktoken (``cl100k_base``, the GPT-3.5/GPT-4
  encoding) when its encoding file is available *offline*; otherwise it returns None and logs why,
  once. It never downloads: tiktoken's network read is blocked while the encoding loads, so only a
  cached file counts (``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else
  ``<tmp>/data-gym-cache``; the file is named by the sha1 of the encoding's URL).
* ``cost_report(...)`` turns per-query token counts and timing into a ``CostReport``; with
  ``cached_input_tokens_per_query`` (the template every call shares, served from the provider's
  cache) those tokens are priced at the cached price where the model lists one, else at the input
  price. The one-time cache write (Anthropic: 1.25x the input price, once per cache lifetime) is
  left out: spread over a thousand queries it is noise.
  ``cost_saved(full, ours)`` is the paper's "cost saved" percentage.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence
from unittest import mock

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

DEFAULT_PRICES = Path(__file__).with_name("prices.json")
DEFAULT_ENCODING = "cl100k_base"


class ModelPrice(BaseModel):
    """USD per 1,000 tokens."""

    model_config = ConfigDict(frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0, description="a cache-hit input token (None: no discount listed)")
    date: str | None = None    # when this entry's prices were read, where it differs from the table's
    source: str | None = None


class PriceTable(BaseModel):
    model_config = ConfigDict(frozen=True)

    date: str
    source: str
    currency: str = "USD"
    models: dict[str, ModelPrice]


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The price table at ``path`` (default: the shipped ``prices.json``); ValueError names the file."""
    path = Path(path) if path is not None else DEFAULT_PRICES
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return PriceTable.model_validate(raw)
    except FileNotFoundError:
        raise ValueError(f"{path}: price table not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    except ValidationError as err:
        raise ValueError(f"{path}: not a price table: {err}") from None


def query_cost(price: ModelPrice, input_tokens: float, output_tokens: float, cached_input_tokens: float = 0.0) -> float:
    """USD for one query with these token counts; ``cached_input_tokens`` of the input tokens are
    cache hits, priced at ``price.cached_input`` (the input price where none is listed)."""
    if not 0 <= cached_input_tokens <= input_tokens:
        raise ValueError(f"cached input tokens ({cached_input_tokens}) must lie between 0 and the input tokens "
                         f"({input_tokens})")
    cached_price = price.cached_input if price.cached_input is not None else price.input
    return ((input_tokens - cached_input_tokens) * price.input + cached_input_tokens * cached_price
            + output_tokens * price.output) / 1000.0


class CostReport(BaseModel):
    """Per-method serving figures, as the paper's tables report them."""

    model_config = ConfigDict(frozen=True)

    n: int                              # instances measured
    input_tokens_per_query: float
    output_tokens_per_query: float
    seconds_per_instance: float
    instances_per_second: float | None  # None when no time was measured
    cost_per_1k_queries: dict[str, float]  # USD, one entry per price-table model
    prices_date: str
    tokenizer: str = ""                 # how the tokens were counted (e.g. "cl100k_base")
    cached_input_tokens_per_query: float = 0.0  # of the input tokens: priced as cache hits

    def saved_vs(self, full: "CostReport") -> dict[str, float]:
        """``cost_saved`` against a full-prompt report, per model both reports price."""
        return {
            model: cost_saved(full.cost_per_1k_queries[model], cost)
            for model, cost in self.cost_per_1k_queries.items()
            if model in full.cost_per_1k_queries
        }


def cost_report(
    input_tokens_per_query: float,
    output_tokens_per_query: float,
    seconds_per_instance: float,
    n: int,
    prices: PriceTable | None = None,
    tokenizer: str = "",
    cached_input_tokens_per_query: float = 0.0,
) -> CostReport:
    prices = prices if prices is not None else load_prices()
    return CostReport(
        n=n,
        input_tokens_per_query=input_tokens_per_query,
        output_tokens_per_query=output_tokens_per_query,
        seconds_per_instance=seconds_per_instance,
        instances_per_second=1.0 / seconds_per_instance if seconds_per_instance > 0 else None,
        cost_per_1k_queries={
            model: 1000.0 * query_cost(price, input_tokens_per_query, output_tokens_per_query,
                                       cached_input_tokens_per_query)
            for model, price in prices.models.items()
        },
        prices_date=prices.date,
        tokenizer=tokenizer,
        cached_input_tokens_per_query=cached_input_tokens_per_query,
    )


def cost_saved(full: float, ours: float) -> float:
    """The paper's "cost saved": 100 * (1 - ours / full), in percent."""
    if full <= 0:
        raise ValueError(f"full-prompt cost must be positive, got {full}")
    return 100.0 * (1.0 - ours / full)


# ---------------------------------------------------------------------------------------------
# tiktoken, offline only
# ---------------------------------------------------------------------------------------------


class _NoNetwork(RuntimeError):
    pass


_TIKTOKEN_LOCK = threading.Lock()


def _cache_dir() -> str:
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    import tempfile

    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


@lru_cache(maxsize=None)
def _offline_encoding(name: str, cache_dir: str) -> Any:
    """tiktoken's encoding ``name`` from local files only, or None (logged once per name and dir)."""
    try:
        import tiktoken
        import tiktoken.load
    except ImportError:
        log.warning("tiktoken is not installed: OpenAI token counts are not available")
        return None
    real_read = tiktoken.load.read_file

    def local_only(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise _NoNetwork(blobpath)
        return real_read(blobpath)

    # tiktoken reads through tiktoken.load.read_file only on a cache miss; blocking it keeps
    # get_encoding from downloading (the patch is process-wide for the few ms of the load)
    with _TIKTOKEN_LOCK, mock.patch.object(tiktoken.load, "read_file", local_only):
        try:
            return tiktoken.get_encoding(name)
        except _NoNetwork as missing:
            log.warning(
                "tiktoken encoding %r is not available offline (not cached in %r; it would download "
                "%s): OpenAI token counts are skipped. To enable them, put that file in a folder "
                "named by $TIKTOKEN_CACHE_DIR, under the sha1 hex digest of its URL.",
                name, cache_dir or "<caching disabled>", missing,
            )
            return None


def count_openai_tokens(texts: Sequence[str] | str, encoding: str = DEFAULT_ENCODING) -> list[int] | None:
    """Tokens per text with tiktoken's ``encoding``, or None when it is not available offline."""
    enc = _offline_encoding(encoding, _cache_dir())
    if enc is None:
        return None
    if isinstance(texts, str):
        texts = [texts]
    return [len(tokens) for tokens in enc.encode_ordinary_batch(list(texts))]
