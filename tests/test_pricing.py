"""The price table and what a run's counters cost."""

from __future__ import annotations

import pytest

from maker_workers.pricing import Price, price_of, usd
from orchestrator.report import ModelCounts, cost_usd


def test_listed_models_and_their_dated_snapshots_have_a_price() -> None:
    assert price_of("openai", "gpt-4.1-mini") == Price(input=0.40, output=1.60, cached=0.10)
    assert price_of("openai", "gpt-4.1-mini-2025-04-14") == price_of("openai", "gpt-4.1-mini")
    assert price_of("anthropic", "claude-haiku-4-5-20251001") == Price(input=1.0, output=5.0, cached=0.10)
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
