"""The price table and what a run's counters cost."""

from __future__ import annotations

import pytest

from maker_workers.members import price_for
from maker_workers.pricing import Price, price_of, usd
from maker_workers.settings import WorkerSettings
from orchestrator.reports.report import ModelCounts, cost_usd


def test_listed_models_and_their_dated_snapshots_have_a_price() -> None:
    assert price_of("openai", "gpt-4.1-mini") == Price(input=0.40, output=1.60, cached=0.10)
    assert price_of("openai", "gpt-4.1-mini-2025-04-14") == price_of("openai", "gpt-4.1-mini")
    haiku = Price(input=1.0, output=5.0, cached=0.10, cache_write=1.25)  # Anthropic's writes: 1.25 x input
    assert price_of("anthropic", "claude-haiku-4-5-20251001") == haiku
    assert price_of("sim", "anything") == Price(input=0, output=0)


def test_an_unlisted_model_has_no_price_rather_than_a_guess() -> None:
    assert price_of("openai", "gpt-9-ultra") is None
    assert price_of("anthropic", "gpt-4.1-mini") is None  # a price belongs to its provider


def test_cost_is_exact_in_nano_dollars() -> None:
    price = Price(input=0.40, output=1.60)
    assert price.cost_nusd(1_000_000, 0) == 400_000_000
    assert usd(sum(price.cost_nusd(123, 45) for _ in range(1_000_000))) == pytest.approx(121.2, abs=1e-9)


def test_each_models_part_and_its_share_of_winning_votes() -> None:
    stats = {
        "cost_nusd": 3000,
        "model:openai:gpt-4.1-mini:samples": 6,
        "model:openai:gpt-4.1-mini:winning_votes": 3,
        "model:openai:gpt-4.1-mini:cost_nusd": 3000,
        "model:ollama:llama3.2:3b:samples": 5,
        "model:ollama:llama3.2:3b:red_flags": 2,
        "model:ollama:llama3.2:3b:winning_votes": 1,
    }
    models = ModelCounts.from_stats(stats)
    assert models["openai:gpt-4.1-mini"].winning_share == 0.75 and models["openai:gpt-4.1-mini"].cost_usd == 3e-6
    assert models["ollama:llama3.2:3b"].red_flags == 2 and models["ollama:llama3.2:3b"].winning_share == 0.25
    assert cost_usd(stats) == 3e-6 and cost_usd({"cost_nusd": 5, "cost_unknown": 1}) is None


def test_cached_input_tokens_are_priced_at_the_cached_rate() -> None:
    price = Price(input=0.40, output=1.60, cached=0.10)
    assert price.cost_nusd(1_000, 100, cached_tokens=800) == 200 * 400 + 800 * 100 + 100 * 1_600
    assert Price(input=0.40, output=1.60).cost_nusd(1_000, 100, cached_tokens=800) == 1_000 * 400 + 100 * 1_600


def test_cache_writes_are_priced_at_anthropics_premium_and_reads_at_the_cached_rate() -> None:
    # claude-sonnet-4-5: $3 in, $15 out, $0.30 a cached read, so $3.75 a written token (1.25 x input).
    price = price_of("anthropic", "claude-sonnet-4-5")
    assert price is not None and price.cache_write == 3.75
    # 2,000 input tokens: 1,500 written to the cache, 400 fresh, 100 read; 50 out. $/Mtok is 1,000 n$ a token.
    assert price.cost_nusd(2_000, 50, cached_tokens=100, written_tokens=1_500) == (
        400 * 3_000 + 100 * 300 + 1_500 * 3_750 + 50 * 15_000
    )
    # A write costs more than a fresh token; nine reads later the cache has paid for itself.
    fresh = price.cost_nusd(1_500, 0)
    assert price.cost_nusd(1_500, 0, written_tokens=1_500) == fresh * 1.25
    assert price.cost_nusd(1_500, 0, written_tokens=1_500) + 9 * price.cost_nusd(1_500, 0, cached_tokens=1_500) < (
        10 * fresh
    )
    # Counts that overrun the input (a provider's rounding) never price a token twice.
    assert price.cost_nusd(100, 0, cached_tokens=80, written_tokens=80) == 80 * 300 + 20 * 3_750


def test_the_write_premium_is_the_providers_so_a_given_price_gets_it_too() -> None:
    given = {"price_in": 2.0, "price_out": 8.0, "price_cached": 0.2}
    anthropic = price_for(WorkerSettings(provider="anthropic", **given), "anthropic", "claude-x")
    openai = price_for(WorkerSettings(provider="openai", **given), "openai", "gpt-x")
    assert anthropic == Price(input=2.0, output=8.0, cached=0.2, cache_write=2.5)
    assert openai is not None and openai.cache_write is None  # OpenAI writes for free: the input price
    assert openai.cost_nusd(1_000, 0, written_tokens=1_000) == 1_000 * 2_000
