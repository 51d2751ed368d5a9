"""Cost accounting: the price table, the arithmetic, and tiktoken that never downloads."""

import json
import logging
import socket
import time

import pytest

from promptintern import cost
from promptintern.cost import cost_report, cost_saved, count_openai_tokens, load_prices


def test_shipped_price_table():
    prices = load_prices()
    assert prices.date == "2024-06" and prices.currency == "USD" and "openai.com" in prices.source
    got = {m: (p.input, p.output, p.cached_input) for m, p in prices.models.items()}
    assert got == {"gpt-3.5-turbo-0125": (0.0005, 0.0015, None), "gpt-4": (0.03, 0.06, None),
                   "gpt-4-turbo": (0.01, 0.03, None), "gpt-4o": (0.005, 0.015, None),
                   "gpt-4o-2024-08-06": (0.0025, 0.01, 0.00125), "gpt-4o-mini": (0.00015, 0.0006, 0.000075),
                   "claude-3-5-sonnet": (0.003, 0.015, 0.0003)}


def test_price_table_from_a_file_and_its_errors(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"date": "2026-01", "source": "mine", "models": {"m": {"input": 1, "output": 2}}}))
    assert load_prices(path).models["m"].output == 2
    path.write_text('{"date": "x", "source": "y", "models": {"m": {"input": -1, "output": 2}}}')
    with pytest.raises(ValueError, match="prices.json: not a price table"):
        load_prices(path)
    path.write_text("{")
    with pytest.raises(ValueError, match=r"prices.json:1:2: not valid JSON"):
        load_prices(path)
    with pytest.raises(ValueError, match="not found"):
        load_prices(tmp_path / "missing.json")


def test_cost_arithmetic_and_savings():
    full = cost_report(1000, 100, 0.5, n=10, tokenizer="cl100k_base")
    # gpt-3.5: 1000 * (1000 * 0.0005 + 100 * 0.0015) / 1000 = 0.65 USD per 1K queries
    assert full.cost_per_1k_queries["gpt-3.5-turbo-0125"] == pytest.approx(0.65)
    assert full.cost_per_1k_queries["gpt-4"] == pytest.approx(36.0)
    assert full.instances_per_second == 2.0 and full.prices_date == "2024-06" and full.n == 10
    ours = cost_report(100, 100, 0.25, n=10)
    assert ours.cost_per_1k_queries["gpt-4"] == pytest.approx(9.0)
    assert ours.saved_vs(full)["gpt-4"] == pytest.approx(75.0)
    assert cost_saved(10.0, 1.2) == pytest.approx(88.0)
    assert cost_report(1, 1, 0.0, n=1).instances_per_second is None
    with pytest.raises(ValueError):
        cost_saved(0.0, 1.0)


def test_cached_template_tokens_are_priced_at_the_cached_price_where_one_is_listed():
    prices = load_prices()
    assert prices.models["claude-3-5-sonnet"].cached_input == pytest.approx(0.1 * prices.models["claude-3-5-sonnet"].input)
    assert all(m.date and m.source for m in prices.models.values() if m.cached_input is not None)
    plain = cost_report(1000, 100, 0.5, n=10)
    cached = cost_report(1000, 100, 0.5, n=10, cached_input_tokens_per_query=800)
    # claude-3-5-sonnet: 1000 * (200 * 0.003 + 800 * 0.0003 + 100 * 0.015) / 1000 = 2.34 USD per 1K queries
    assert cached.cost_per_1k_queries["claude-3-5-sonnet"] == pytest.approx(2.34)
    assert plain.cost_per_1k_queries["claude-3-5-sonnet"] == pytest.approx(4.5)
    # gpt-4o-2024-08-06: the cached prefix at half price
    assert cached.cost_per_1k_queries["gpt-4o-2024-08-06"] == pytest.approx(200 * 0.0025 + 800 * 0.00125 + 100 * 0.01)
    # gpt-4 lists no cached price: caching changes nothing
    assert cached.cost_per_1k_queries["gpt-4"] == pytest.approx(plain.cost_per_1k_queries["gpt-4"])
    assert cached.cached_input_tokens_per_query == 800
    with pytest.raises(ValueError, match="cached input tokens"):
        cost_report(100, 10, 0.5, n=1, cached_input_tokens_per_query=200)


def test_tiktoken_offline_returns_none_fast_and_says_why_once(tmp_path, monkeypatch, caplog):
    def no_network(*args, **kwargs):
        raise AssertionError("count_openai_tokens tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache
    caplog.set_level(logging.WARNING, logger="promptintern.cost")
    start = time.monotonic()
    assert count_openai_tokens(["hello world"]) is None
    assert count_openai_tokens("again") is None
    assert time.monotonic() - start < 2.0
    warnings = [r for r in caplog.records if "not available offline" in r.getMessage()]
    assert len(warnings) == 1 and "cl100k_base" in warnings[0].getMessage()


def test_counts_with_an_encoding_tiktoken_loads(tmp_path, monkeypatch):
    import tiktoken

    class Stub:
        def encode_ordinary_batch(self, texts):
            return [t.split() for t in texts]

    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: Stub())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert count_openai_tokens(["a b c", "d"]) == [3, 1]


def test_counts_with_the_real_encoding_when_cached_locally():
    if cost._offline_encoding("cl100k_base", cost._cache_dir()) is None:
        pytest.skip("tiktoken's cl100k_base file is not cached on this machine")
    assert count_openai_tokens(["hello world", ""]) == [2, 0]
