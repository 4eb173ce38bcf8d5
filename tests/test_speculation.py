"""What speculation may cost: the waste budget on its own, then real runs on a free and a priced model."""

from __future__ import annotations

import json
import math
import re

import redis
from hypothesis import given
from hypothesis import strategies as st

from maker_workers.celery_app import make_app
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.votes import Contest, Snapshot
from orchestrator.engine.runner import Runner, VotingConfig, _Open
from orchestrator.engine.speculation import PRICED_MAX_WASTE, WasteBudget
from tests.conftest import run_cli

PRICED = ("--price-in", "0.4", "--price-out", "1.6")
# Wrong one time in five, so many guesses lose; latency enough for the window to fill.
NOISY = ("hanoi", "--disks", "5", "--sim-error-rate", "0.2", "--sim-latency-ms", "50", "--json")


def test_speculation_on_a_model_without_a_price_is_not_held_back() -> None:
    budget = WasteBudget(None, sent=100, wasted=40)
    assert budget.share is None and budget.spare(at_risk=50) == math.inf


def test_once_samples_cost_money_what_is_wasted_or_at_risk_stays_within_five_percent_of_what_was_sent() -> None:
    budget = WasteBudget(None, priced=True, sent=200, wasted=4)
    assert budget.share == PRICED_MAX_WASTE
    # 0.05 * (200 + x) >= 4 + 3 + x  <=>  x <= 3 / 0.95
    assert budget.spare(at_risk=3) == 3 / 0.95
    assert budget.spare(at_risk=7) == 0  # nothing more may be risked until more is sent


def test_max_waste_given_is_kept_priced_or_not() -> None:
    assert WasteBudget(0.1).share == 0.1 and WasteBudget(0.1, priced=True).share == 0.1
    assert WasteBudget(1.0, priced=True, sent=10, wasted=9).spare(at_risk=1) == math.inf  # 1: no cap
    assert WasteBudget(0.0, sent=1_000).spare(at_risk=0) == 0  # 0: no sample at risk, sequential voting


# What a run does to the budget: sends a step's needed samples (never held back), sends guesses what the budget
# has room for, drops every guess (a leader lost: all at risk is wasted), or commits (the guesses are on the path).
_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("needed"), st.integers(1, 10)),
        st.tuples(st.just("guess"), st.integers(1, 10)),
        st.tuples(st.just("drop"), st.just(0)),
        st.tuples(st.just("commit"), st.just(0)),
    ),
    max_size=200,
)


@given(_EVENTS, st.sampled_from([0.0, 0.01, 0.05, 0.3]))
def test_whatever_the_guesses_come_to_the_wasted_share_never_passes_the_cap(events: list, share: float) -> None:
    budget, at_risk = WasteBudget(share), 0
    for kind, count in events:
        if kind == "needed":
            budget.sent += count
        elif kind == "guess":
            risked = min(count, int(budget.spare(at_risk)))
            budget.sent += risked
            at_risk += risked
        elif kind == "drop":
            budget.wasted, at_risk = budget.wasted + at_risk, 0
        else:
            at_risk = 0
        assert budget.wasted + at_risk <= share * budget.sent + 1e-9


def _window(runner: Runner, steps: int) -> list[_Open]:
    """The front and its guesses, each fresh: nothing sent, nothing voted."""
    return [
        _Open(
            step=step,
            state=[],
            previous=None,
            contest=Contest(run_id=runner.run_id, step=step, input_hash=f"x{step}", k=3),
            known=Snapshot(),
            sent=0,
        )
        for step in range(steps)
    ]


def test_under_the_budget_the_front_is_fed_in_full_and_the_nearest_guesses_get_what_is_left(redis_url: str) -> None:
    runner = Runner(redis.Redis.from_url(redis_url), make_app(redis_url), VotingConfig(k=3), HanoiTask(3))
    window = _window(runner, 4)
    assert [count for _, count, _ in runner._feed(window, window)] == [3, 3, 3, 3]  # free: every contest its k
    runner.waste.priced, runner.waste.sent = True, 100  # room for 5 at risk: 0.05 * (100 + 5) >= 5
    assert [count for _, count, _ in runner._feed(window, [])] == [3, 3, 2, 0]
    runner.waste.wasted = 5  # a guess was dropped: nothing more at risk until more is sent
    assert [count for _, count, _ in runner._feed(window, [])] == [3, 0, 0, 0]


def _ended(stderr: str) -> tuple[int, float]:
    """The wasted samples and share the run's last progress line shows."""
    end = [line for line in stderr.splitlines() if line.startswith("end:")][-1]
    found = re.search(r"wasted (\d+) \(([\d.]+)%\)", end)
    assert found is not None, end
    return int(found[1]), float(found[2]) / 100


def test_a_priced_run_wastes_at_most_five_percent_of_its_samples_where_a_free_one_speculates_freely() -> None:
    free, priced = run_cli(*NOISY), run_cli(*NOISY, *PRICED)
    for result in (free, priced):
        assert "Traceback" not in result.stderr
        assert json.loads(result.stdout.splitlines()[-1])["steps"] == 31, result.stderr
    free_report, priced_report = (json.loads(r.stdout.splitlines()[-1]) for r in (free, priced))
    # What a user reads in the report: the share of the samples paid for that no step counted.
    assert priced_report["cost_usd"] > 0 and free_report["cost_usd"] == 0  # the sim is free unless priced
    assert priced_report["wasted_samples"] <= 0.05 * priced_report["samples"]
    assert free_report["wasted_samples"] > 0.05 * free_report["samples"]  # the default is unchanged for free models
    # And what the log said as the run ended.
    assert _ended(priced.stderr)[1] <= 0.05 < _ended(free.stderr)[1]
