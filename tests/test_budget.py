"""The run's spend against its budget (orchestrator/engine/budget.py): what the notices say, and when it stops."""

from __future__ import annotations

import pytest

from maker_workers.errors import BudgetSpent, ConfigError
from maker_workers.votes import Notice, Outcome, Snapshot
from orchestrator.engine.budget import Spend


def notice(spent: int | None, unknown: str | None = None) -> Notice:
    return Notice(
        sample_id="s",
        step=0,
        input_hash="h",
        outcome=Outcome.VOTE,
        snapshot=Snapshot(),
        spent_nusd=spent,
        cost_unknown=unknown,
    )


def test_the_newest_notice_is_the_spend_and_a_budget_stops_at_it() -> None:
    spend = Spend(budget_usd=0.01)
    spend.hear(notice(4_000_000))
    spend.hear(notice(3_000_000))  # an older notice, heard late, never lowers it
    assert spend.nusd == 4_000_000 and spend.priced and spend.spent_usd == pytest.approx(0.004)
    spend.check()
    spend.hear(notice(10_000_000))
    with pytest.raises(BudgetSpent):
        spend.check()


def test_an_unknown_price_makes_the_spend_unknown_and_a_budget_unkeepable_naming_the_model() -> None:
    spend = Spend(budget_usd=None)
    spend.hear(notice(1_000, unknown="openai:mystery"))
    assert spend.spent_usd is None and spend.unknown == "openai:mystery"
    spend.check()  # no budget: nothing to keep
    with pytest.raises(ConfigError, match="the price of openai:mystery is unknown"):
        Spend(budget_usd=1.0, unknown="openai:mystery").check()


def test_a_free_model_is_not_priced() -> None:
    spend = Spend(budget_usd=None)
    spend.hear(notice(0))
    assert not spend.priced and spend.spent_usd == 0
