"""The reliability the votes imply while a run goes, and --adaptive-k, through the real engine."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SimServer
from orchestrator.cluster.connect import ClusterOptions
from orchestrator.cluster.embedded import Embedded
from orchestrator.cluster.model_options import ModelOptions
from orchestrator.engine.runner import CommittedStep, VotingConfig
from orchestrator.interfaces import api
from orchestrator.planning import method
from orchestrator.planning.reliability import LiveReliability, p_needed


def test_the_estimate_recovers_p_from_ahead_by_k_votes() -> None:
    rng, p, k = random.Random(3), 0.85, 4
    live = LiveReliability(window=10_000)
    for _ in range(3000):
        lead, right, wrong = 0, 0, 0
        while abs(lead) < k:  # one rival, as the formulas assume
            if rng.random() < p:
                lead, right = lead + 1, right + 1
            else:
                lead, wrong = lead - 1, wrong + 1
        winner = right if lead > 0 else wrong
        live.observe(right + wrong, winner)
    # Stopping at a margin biases the share a little towards the winner; a point or so at this p.
    assert live.p == pytest.approx(p, abs=0.02)
    reading = live.reading(k, 1000)
    assert reading.p == pytest.approx(live.p, abs=1e-6)  # shown as measured, without Laplace's shift
    assert reading.reliability == pytest.approx(method.p_full(live.p_posterior, k, 1000))


@given(st.floats(0.55, 0.999), st.integers(10, 10**6), st.floats(0.5, 0.999), st.integers(1, 8))
def test_a_larger_k_is_asked_for_only_when_the_upper_bound_on_p_is_below_what_k_needs(
    p: float, steps: int, target: float, k: int
) -> None:
    live = LiveReliability()
    for _ in range(50):
        live.observe(100, round(100 * p))
    asked = live.k_for(target, steps, k)
    _, high, _ = live.bound(steps)
    assert (asked is None) == (high >= p_needed(k, steps, target) or live.p <= 0.5)
    if asked is not None:
        assert asked[0] == max(k + 1, method.k_min(live.p, steps, target)) and "upper confidence bound" in asked[1]


def test_p_needed_is_where_the_run_meets_its_target_exactly() -> None:
    for k, steps, target in ((3, 4095, 0.99), (4, 1_048_575, 0.95), (5, 127, 0.99)):
        assert method.p_full(p_needed(k, steps, target), k, steps) == pytest.approx(target)


def test_no_k_is_asked_for_on_thin_evidence() -> None:
    live = LiveReliability()
    live.observe(3, 3)
    assert live.k_for(0.99, 1000, 3) is None


def test_noise_at_the_plans_edge_raises_no_k_but_a_real_drift_does() -> None:
    # A million steps at k=4 planned from p = 0.99 (target 0.95): p_needed is 0.9852. Votes at p = 0.99 keep k; the
    # same votes at 0.97 ask for more within the act window (about a thousand steps).
    rng = random.Random(5)
    steady, drifted = LiveReliability(total_steps=1_048_575), LiveReliability(total_steps=1_048_575)
    for _ in range(3_000):
        for live, p in ((steady, 0.99), (drifted, 0.97)):
            wrong = sum(rng.random() > p for _ in range(4))
            live.observe(4 + 2 * wrong, 4 + wrong, k=4, runner_up_votes=wrong)
    assert steady.k_for(0.95, 1_048_575, 4) is None
    assert drifted.k_for(0.95, 1_048_575, 4) is not None


@pytest.fixture(scope="module")
def drifting() -> Iterator[tuple[SimServer, Embedded]]:
    """A model whose error rate the test changes mid-run, behind a cluster that calls it."""
    sim = SimServer("127.0.0.1", 0, SimConfig(seed=21, error_rate=0.1))
    sim.start_in_thread()
    models = ModelOptions(provider="openai", model="sim-hanoi", base_url=sim.url)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", "sk-test")
        with Embedded(workers=2, concurrency=8, models=models) as cluster:
            yield sim, cluster
    sim.shutdown()
    sim.server_close()


@pytest.mark.parametrize("adaptive", [True, False])
def test_a_model_that_gets_worse_halfway_raises_k_with_adaptive_k(
    drifting: tuple[SimServer, Embedded], adaptive: bool
) -> None:
    sim, cluster = drifting
    sim.model.config.error_rate = 0.1
    steps, target = 127, 0.99
    planned = method.k_min(0.9, steps, target)  # calibrated at p = 0.9
    warnings: list[str] = []

    def worse_halfway(step: CommittedStep) -> None:
        if step.step == steps // 2:
            sim.model.config.error_rate = 0.25  # now p = 0.75: k=planned leaves the target far behind

    voting = VotingConfig(k=planned, target_reliability=target, adaptive_k=adaptive)
    hooks = api.Hooks(on_step=worse_halfway, on_warning=warnings.append)
    report = api.run_hanoi(7, voting=voting, cluster=ClusterOptions(redis_url=cluster.redis_url), hooks=hooks)
    assert report.p_estimate is not None and report.p_estimate < 0.85  # the votes saw the drift
    # At p = 0.75 the planned k keeps a step right with 1 - p_sub; over 63 steps the run fails this often:
    risk = 1 - method.p_full(0.75, planned, steps - steps // 2)
    assert risk > 0.1  # what the fixed-k run is exposed to: it warns, and may or may not be lucky
    assert warnings and "below the target" in warnings[0]
    if adaptive:
        assert report.k_changes[0] == (0, planned) and report.k_changes[-1][1] > planned
        assert report.solved and report.errors == 0
        assert "k raised to" in warnings[-1]
    else:
        assert report.k_changes == [(0, planned)] and "--adaptive-k" in warnings[0]
