"""The MAKER formulas, checked against known values, their definitions and Monte Carlo."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maker_workers.errors import ConfigError
from orchestrator.planning.method import expected_samples, expected_votes, k_min, p_full, p_sub, to_enqueue


def test_p_sub_known_values() -> None:
    assert p_sub(0.9, 1) == pytest.approx(0.9)
    assert p_sub(0.9, 3) == pytest.approx(1 / (1 + (1 / 9) ** 3))
    assert p_sub(1.0, 3) == 1.0
    assert p_full(0.99, 3, 1_048_575) == pytest.approx(p_sub(0.99, 3) ** 1_048_575)


@given(p=st.floats(0.51, 0.999), steps=st.integers(1, 2_000_000), target=st.floats(0.01, 0.999))
def test_k_min_is_the_smallest_k_reaching_the_target(p: float, steps: int, target: float) -> None:
    k = k_min(p, steps, target)
    assert p_full(p, k, steps) >= target * (1 - 1e-9)
    if k > 1:
        assert p_full(p, k - 1, steps) < target


def test_k_min_matches_the_paper_setting() -> None:
    # gpt-4.1-mini: per-step error 0.0022, 2^20 - 1 steps; the paper ran k = 3.
    assert k_min(1 - 0.0022, 2**20 - 1, 0.95) == 3


def test_expected_votes_limits() -> None:
    assert expected_votes(1.0, 4) == 4
    assert expected_votes(0.999999, 4) == pytest.approx(4, rel=1e-4)
    # as p -> 1/2 the walk is symmetric and E[n] -> k^2
    assert expected_votes(0.500001, 3) == pytest.approx(9, rel=1e-3)
    assert expected_samples(0.9, 3, 0.5) == pytest.approx(2 * expected_votes(0.9, 3))


@pytest.mark.parametrize("bad", [0.5, 0.2, 1.5])
def test_bad_p_is_a_clear_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="p"):
        k_min(bad, 100, 0.9)


@pytest.mark.parametrize(("p", "k"), [(0.7, 2), (0.8, 3), (0.6, 4)])
def test_formulas_agree_with_a_simulated_walk(p: float, k: int) -> None:
    rng, trials, wrong, votes = random.Random(1), 40_000, 0, 0
    for _ in range(trials):
        margin = 0
        while abs(margin) < k:
            margin += 1 if rng.random() < p else -1
            votes += 1
        wrong += margin < 0
    failure, sd = 1 - p_sub(p, k), math.sqrt(p_sub(p, k) * (1 - p_sub(p, k)) / trials)
    assert abs(wrong / trials - failure) < 4 * sd
    assert votes / trials == pytest.approx(expected_votes(p, k), rel=0.03)


@given(k=st.integers(1, 10), margin=st.integers(0, 10), in_flight=st.integers(0, 20))
def test_to_enqueue_keeps_enough_in_flight(k: int, margin: int, in_flight: int) -> None:
    n = to_enqueue(k, margin, in_flight)
    assert n >= 0
    assert margin + in_flight + n >= k or (n == 0 and margin + in_flight >= k)
    assert in_flight + n >= 1  # never stalls
    if in_flight > 0:
        assert n == max(0, k - margin - in_flight)


def test_k_min_at_an_exact_boundary() -> None:
    # p_sub(0.75, 1) is exactly 0.75: k = 1 already reaches a 0.75 target (the closed form rounds to 2)
    assert k_min(0.75, 1, 0.75) == 1
