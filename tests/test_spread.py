"""Copies are not votes, and one p does not describe a real model: the estimators that see it, checked against
draws whose truth is known (Monte Carlo), and the plan and live reading that act on them."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maker_workers.errors import ConfigError
from orchestrator.planning.calibrate import _beta_fit, spread
from orchestrator.planning.method import p_sub
from orchestrator.planning.plan import Spread, plan
from orchestrator.planning.reliability import LiveReliability


def counts(rng: random.Random, per_step: list[float], n: int) -> list[tuple[int, int]]:
    return [(sum(rng.random() < p for _ in range(n)), n) for p in per_step]


def test_independent_answers_with_one_p_show_no_correlation() -> None:
    rng = random.Random(1)
    rho, a, b = _beta_fit(counts(rng, [0.9] * 2_000, 4))
    assert rho < 0.03
    assert a is None or a / (a + b) == pytest.approx(0.9, abs=0.01)


def test_steps_that_are_all_right_or_all_wrong_show_full_correlation() -> None:
    # A model near T=0: every sample of a step says the same thing; 20% of steps it is wrong.
    rng = random.Random(2)
    rho, a, b = _beta_fit(counts(rng, [1.0 if rng.random() < 0.8 else 0.0 for _ in range(500)], 5))
    assert rho > 0.99 and a is not None and b is not None
    assert Spread(a, b).unfixable == pytest.approx(0.2, abs=0.04)


def test_a_spread_of_p_across_steps_is_recovered_by_the_beta_fit() -> None:
    rng = random.Random(3)
    truth = [rng.betavariate(6, 1.5) for _ in range(4_000)]
    rho, a, b = _beta_fit(counts(rng, truth, 6))
    assert rho == pytest.approx(1 / (6 + 1.5 + 1), abs=0.03)
    assert a is not None and b is not None
    assert Spread(a, b).unfixable == pytest.approx(sum(p < 0.5 for p in truth) / len(truth), abs=0.03)


@given(st.lists(st.tuples(st.integers(0, 8), st.integers(1, 8)), min_size=2, max_size=40))
def test_the_correlation_is_always_between_0_and_1(raw: list[tuple[int, int]]) -> None:
    rho, a, b = _beta_fit([(min(x, n), n) for x, n in raw])
    assert 0.0 <= rho <= 1.0
    assert (a is None) == (b is None)


def test_a_calibrations_spread_counts_wrong_modes_collisions_and_copies() -> None:
    right, group, answers = {}, {}, {}
    steps = [["A", "A", "A"], ["B", "B", "A"], ["A", "C", "A"]]  # the right answer is A everywhere
    for i, votes in enumerate(steps):
        for j, candidate in enumerate(votes):
            sample = f"{i}-{j}"
            right[sample], group[sample] = "A", i
            answers[sample] = {"kind": "vote", "candidate": candidate, "copy": "1" if j and candidate == "B" else "0"}
    found = spread(right, group, answers)
    assert found is not None and found.steps == 3
    assert found.wrong_mode_steps == 1 and found.hard_steps == 1  # B leads step 1: no k fixes that step
    assert found.wrong_collisions == pytest.approx(2 / 3)  # of the 3 wrong answers, the two Bs collide
    assert found.copy_share == pytest.approx(1 / 6, abs=1e-6)


def test_the_plan_over_a_spread_says_plainly_when_no_k_reaches_the_target() -> None:
    with pytest.raises(ConfigError, match=r"no k reaches reliability 0.9 over 100 steps.*below 0.5"):
        plan(0.8, 100, 0.9, spread=(2.0, 0.5))
    # Without steps below 0.5 the spread plan agrees with the one-p plan it tends to.
    assert plan(0.99, 1_000, 0.9, spread=(99_000.0, 1_000.0)).k_min == plan(0.99, 1_000, 0.9).k_min
    # A spread costs a larger k than its mean p would suggest.
    assert plan(0.95, 1_000, 0.9, spread=(19.0, 1.0)).k_min > plan(0.95, 1_000, 0.9).k_min


def test_copies_are_counted_once_so_five_identical_votes_are_no_k5_decision() -> None:
    # 12 steps, each decided by five byte-identical votes: one observation a step, not five.
    copied, independent = LiveReliability(), LiveReliability()
    for _ in range(12):
        copied.observe(5, 5, k=5, copies=4, winner_distinct=1)
        independent.observe(5, 5, k=5)
    alike, apart = copied.reading(5, 12), independent.reading(5, 12)
    assert copied.alike and not independent.alike
    assert apart.reliability > 0.999 and alike.reliability < 0.6
    assert alike.margin == 1 and alike.reliability == pytest.approx(p_sub(copied.p_posterior, 1) ** 12, rel=1e-4)
    assert copied.k_for(0.99, 12, 5) is None  # more votes would buy more copies, not evidence


def test_a_calibrated_spread_caps_what_unanimous_votes_claim() -> None:
    # A model that is surely right or surely wrong, step by step (Beta(0.9, 0.1): 10% of steps it always errs):
    # every step's votes agree, so the votes alone read p near 1; the calibration knows better.
    blind, told = LiveReliability(), LiveReliability(spread=(0.9, 0.1))
    for _ in range(50):
        blind.observe(3, 3, k=3)
        told.observe(3, 3, k=3)
    assert blind.reading(3, 50).reliability > 0.99
    assert (
        told.reading(3, 50).reliability == pytest.approx(Spread(0.9, 0.1).step_ok(3) ** 50)
        and told.reading(3, 50).reliability < 0.05
    )


def test_a_strong_model_with_one_always_wrong_step_plans_without_crashing() -> None:
    _, a, b = _beta_fit([(4, 4)] * 2_999 + [(0, 4)])
    assert a is not None and b is not None and a > 0 and b > 0
    planned = plan(0.9996, 1_000, 0.5, spread=(a, b))
    assert planned.unfixable_share is not None and 0 < planned.unfixable_share < 0.01
