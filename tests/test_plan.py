"""`maker plan` against MAKER.md's formulas, computed here afresh (not through orchestrator/planning/method.py)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.planning.calibrate import Calibration
from orchestrator.planning.plan import expected_rounds, plan
from tests.conftest import run_cli


def p_full_of(p: float, k: int, steps: int) -> float:
    return (1.0 / (1.0 + ((1.0 - p) / p) ** k)) ** steps


def k_min_of(p: float, steps: int, target: float) -> int:
    """The definition: the least k whose whole-run success reaches the target."""
    k = 1
    while p_full_of(p, k, steps) < target:
        k += 1
    return k


def votes_of(p: float, k: int) -> float:
    r = (1.0 - p) / p
    return k / (2.0 * p - 1.0) * (1.0 - r**k) / (1.0 + r**k)


# p: MAKER.md's calibrated models (gpt-4.1-mini, o3-mini, gpt-oss-20B, haiku-4.5, gpt-4.1-nano), and the sim.
CASES = [
    # p, steps, target, valid rate, ($/M in, $/M out, tokens in, tokens out)
    (1 - 0.0022, 2**20 - 1, 0.95, 0.99, (0.4, 1.6, 600, 538)),
    (1 - 0.0018, 2**20 - 1, 0.99, 0.97, (1.1, 4.4, 600, 535)),
    (1 - 0.0358, 2**15 - 1, 0.9, 0.9, (0.05, 0.2, 600, 1104)),
    (1 - 0.1839, 1023, 0.99, 0.95, (1.0, 5.0, 600, 588)),
    (1 - 0.3571, 127, 0.5, 0.8, (0.1, 0.4, 600, 842)),
    (0.99, 255, 0.999, 1.0, (0.0, 0.0, 240, 33)),
]


@pytest.mark.parametrize(("p", "steps", "target", "valid", "price"), CASES)
def test_plan_reproduces_the_formulas(
    p: float, steps: int, target: float, valid: float, price: tuple[float, float, int, int]
) -> None:
    price_in, price_out, tokens_in, tokens_out = price
    args = ["--p", str(p), "--steps", str(steps), "--target", str(target), "--valid-rate", str(valid)]
    costs = ["--price-in", str(price_in), "--price-out", str(price_out)]
    tokens = ["--tokens-in", str(tokens_in), "--tokens-out", str(tokens_out)]
    result = run_cli("plan", *args, *costs, *tokens, "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])

    k = k_min_of(p, steps, target)
    closed_form = math.ceil(math.log(target ** (-1.0 / steps) - 1.0) / math.log((1.0 - p) / p))
    assert k == max(1, closed_form)  # none of the cases sits on a rounding boundary
    per_step = votes_of(p, k) / valid
    per_sample = (tokens_in * price_in + tokens_out * price_out) / 1e6
    assert got["k_min"] == k
    assert got["p_full"] == pytest.approx(p_full_of(p, k, steps), rel=1e-9)
    assert got["p_full"] >= target > p_full_of(p, k - 1, steps) if k > 1 else got["p_full"] >= target
    assert got["expected_samples_per_step"] == pytest.approx(per_step, rel=1e-9)
    assert got["expected_samples"] == pytest.approx(per_step * steps, rel=1e-9)
    assert got["projected_cost_usd"] == pytest.approx(per_sample * steps * per_step, rel=1e-9, abs=1e-12)
    # the paper's estimate c s k / (v (2p - 1)) is the same walk without its early ends: never below
    assert got["projected_cost_usd"] <= per_sample * steps * k / (valid * (2 * p - 1)) + 1e-12


def test_the_human_readout_names_k_cost_and_wall_time() -> None:
    result = run_cli(
        "plan", "--p", "0.998", "--steps", "1048575", "--target", "0.95", "--valid-rate", "0.99",
        "--price-in", "0.4", "--price-out", "1.6", "--tokens-in", "600", "--tokens-out", "538",
        "--latency-s", "2", "--concurrency", "64",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "k_min 3" in result.stdout and "projected cost $" in result.stdout and "wall time" in result.stdout


PRICED = ["--p", "0.9", "--steps", "10", "--target", "0.9", "--price-in", "1", "--price-out", "2"]
PRICED += ["--tokens-in", "100", "--tokens-out", "10"]


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (["--p", "0.5", "--steps", "10", "--target", "0.9"], "--p"),
        (["--p", "0.2", "--steps", "10", "--target", "0.9"], "--p"),
        (["--p", "1.5", "--steps", "10", "--target", "0.9"], "--p"),
        (["--p", "0.9", "--steps", "10", "--target", "0"], "--target"),
        (["--p", "0.9", "--steps", "10", "--target", "1"], "--target"),
        (["--p", "0.9", "--steps", "10", "--target", "1.5"], "--target"),
        (["--p", "0.9", "--steps", "0", "--target", "0.9"], "--steps"),
        (["--p", "0.9", "--steps", "-3", "--target", "0.9"], "--steps"),
        (["--steps", "10", "--target", "0.9"], "--from-calibration"),
        (["--p", "0.9", "--steps", "10", "--target", "0.9", "--valid-rate", "0"], "--valid-rate"),
        (["--p", "0.9", "--steps", "10", "--target", "0.9", "--price-in", "1"], "--price-out"),
        (["--p", "0.9", "--steps", "10", "--target", "0.9", "--price-in", "1", "--price-out", "2"], "--tokens-in"),
        (["--steps", "10", "--target", "0.9", "--from-calibration", "/nonexistent.json"], "--from-calibration"),
        ([*PRICED, "--price-cached", "0.1", "--cached-share", "1.5"], "--cached-share"),
        ([*PRICED, "--price-cached", "0.1", "--cached-share", "-0.2"], "--cached-share"),
        ([*PRICED, "--cached-share", "0.5"], "--price-cached"),
        (["--p", "0.9", "--steps", "10", "--target", "0.9", "--price-cached", "0.1"], "--price-in"),
    ],
)
def test_bad_input_gets_one_message_and_exit_2(args: list[str], mention: str) -> None:
    result = run_cli("plan", *args)
    assert result.returncode == 2, result.stderr
    assert mention in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_the_cached_share_of_the_input_is_priced_at_the_cached_rate() -> None:
    args = ["--p", "0.99", "--steps", "1000", "--target", "0.9", "--tokens-in", "1000", "--tokens-out", "100"]
    prices = ["--price-in", "3", "--price-out", "15", "--price-cached", "0.3"]
    result = run_cli("plan", *args, *prices, "--cached-share", "0.8", "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    # 200 fresh input tokens at $3/M, 800 cached at $0.30/M, 100 out at $15/M.
    assert got["cost_per_sample_usd"] == pytest.approx((200 * 3 + 800 * 0.3 + 100 * 15) / 1e6, rel=1e-12)
    assert got["projected_cost_usd"] == pytest.approx(got["cost_per_sample_usd"] * got["expected_samples"])
    uncached = json.loads(run_cli("plan", *args, *prices, "--json").stdout.strip().splitlines()[-1])
    assert uncached["cost_per_sample_usd"] == pytest.approx((1000 * 3 + 100 * 15) / 1e6, rel=1e-12)
    readout = run_cli("plan", *args, *prices, "--cached-share", "0.8")
    assert "80% of the input read from the cache" in readout.stdout


def test_a_calibrations_measured_cached_share_prices_the_plan(tmp_path: Path) -> None:
    calibration = Calibration(
        run_id="r", task="t", disks=None, steps=100, models=["anthropic:m"], samples=10, answered=10, votes=10,
        correct=10, p=0.99, p_low=0.9, p_high=1.0, valid_rate=1.0, red_flags=0, red_flags_by_reason={}, errors=0,
        input_tokens_mean=1000.0, cached_share=0.75, output_tokens=None, error_by_length=[], cost_usd=None,
        cost_per_sample_usd=None, temperature_omitted=False, wall_s=1.0,
    )  # fmt: skip
    path = tmp_path / "cal.json"
    path.write_text(calibration.model_dump_json())
    args = ["--from-calibration", str(path), "--steps", "100", "--target", "0.9", "--tokens-out", "0", "--json"]
    prices = ["--price-in", "4", "--price-out", "1", "--price-cached", "0.4"]
    got = json.loads(run_cli("plan", *args, *prices).stdout.strip().splitlines()[-1])
    assert got["cost_per_sample_usd"] == pytest.approx((250 * 4 + 750 * 0.4) / 1e6, rel=1e-12)
    # --cached-share overrides what the calibration measured.
    got = json.loads(run_cli("plan", *args, *prices, "--cached-share", "0").stdout.strip().splitlines()[-1])
    assert got["cost_per_sample_usd"] == pytest.approx(1000 * 4 / 1e6, rel=1e-12)
    # Without a cached price, every input token is priced at the input's, and the plan says what it left out.
    unpriced = run_cli("plan", *args, *prices[:4])
    assert "75% of the calibration's input was read from the prompt cache" in unpriced.stderr
    assert json.loads(unpriced.stdout.strip().splitlines()[-1])["cost_per_sample_usd"] == pytest.approx(4e-3)


def test_a_file_that_is_not_a_calibration_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"p": 0.9}')
    result = run_cli("plan", "--steps", "10", "--target", "0.9", "--from-calibration", str(bad))
    assert result.returncode == 2 and "is not a `maker calibrate --out` file" in " ".join(result.stderr.split())


probabilities = st.floats(min_value=0.501, max_value=0.99999)
targets = st.floats(min_value=0.01, max_value=0.999)
step_counts = st.integers(min_value=1, max_value=10**7)


@given(p=probabilities, steps=step_counts, more=st.integers(0, 10**7), target=targets)
def test_k_min_never_falls_as_steps_grow(p: float, steps: int, more: int, target: float) -> None:
    assert plan(p, steps, target).k_min <= plan(p, steps + more, target).k_min


@given(p=probabilities, steps=step_counts, t1=targets, t2=targets)
def test_k_min_never_falls_as_the_target_rises(p: float, steps: int, t1: float, t2: float) -> None:
    low, high = sorted((t1, t2))
    assert plan(p, steps, low).k_min <= plan(p, steps, high).k_min


@given(p1=probabilities, p2=probabilities, steps=step_counts, target=targets)
def test_k_min_never_rises_as_p_rises(p1: float, p2: float, steps: int, target: float) -> None:
    worse, better = sorted((p1, p2))
    assert plan(better, steps, target).k_min <= plan(worse, steps, target).k_min


def simulated_rounds(p: float, valid: float, k: int, steps: int, rng: random.Random) -> float:
    """The run loop's batches written plainly: send k - margin, wait for all, until one answer leads by k."""
    total = 0
    for _ in range(steps):
        right = wrong = 0
        while abs(right - wrong) < k:
            total += 1
            for _ in range(k - abs(right - wrong)):
                if rng.random() < valid:
                    right, wrong = (right + 1, wrong) if rng.random() < p else (right, wrong + 1)
    return total / steps


@pytest.mark.parametrize(("p", "valid", "k"), [(0.99, 0.985, 3), (0.9, 0.98, 5), (0.75, 1.0, 9), (0.64, 0.95, 20)])
def test_the_wall_time_models_rounds_match_simulated_batches(p: float, valid: float, k: int) -> None:
    simulated = simulated_rounds(p, valid, k, 20_000, random.Random(7))
    assert expected_rounds(p, k, valid) == pytest.approx(simulated, rel=0.03)


def test_wall_time_is_steps_times_latency_times_rounds_or_the_concurrency_bound() -> None:
    free = plan(0.9, 1000, 0.9, valid_rate=0.95, latency_s=2.0)
    assert free.projected_wall_s == pytest.approx(1000 * 2.0 * free.expected_rounds_per_step)
    narrow = plan(0.9, 1000, 0.9, valid_rate=0.95, latency_s=2.0, concurrency=2)
    assert narrow.projected_wall_s == pytest.approx(1000 * 2.0 * narrow.expected_samples_per_step / 2)
    assert plan(1.0, 50, 0.9, latency_s=1.0).projected_wall_s == pytest.approx(50.0)  # one round a step


def test_target_reliability_picks_the_formulas_k_for_hanoi() -> None:
    result = run_cli("hanoi", "--disks", "4", "--target-reliability", "0.999", "--p", "0.9", "--json")
    assert result.returncode == 0, result.stderr
    k = k_min_of(0.9, 15, 0.999)
    assert last_json(result.stdout)["k"] == k == 5
    assert f"k={k}" in result.stderr


def test_target_reliability_picks_the_formulas_k_for_a_spec() -> None:
    result = run_cli(
        "run", "examples/ledger.yaml", "--target-reliability", "0.99", "--p", "0.8", "--sim-error-rate", "0.2", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["k"] == k_min_of(0.8, 40, 0.99) == 6


def test_target_reliability_needs_a_known_number_of_steps() -> None:
    result = run_cli("run", "examples/sort.yaml", "--target-reliability", "0.99", "--p", "0.75")
    assert result.returncode == 2 and "number of steps" in result.stderr


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (["--k", "3", "--target-reliability", "0.9", "--p", "0.9"], "not both"),
        (["--target-reliability", "0.9"], "exactly one of --p"),
        (["--target-reliability", "0.9", "--p", "0.9", "--from-calibration", "x.json"], "exactly one of --p"),
        (["--p", "0.9"], "--target-reliability"),
        (["--target-reliability", "0.9", "--p", "0.4"], "(0.5, 1]"),
        (["--target-reliability", "1.0", "--p", "0.9"], "(0, 1)"),
    ],
)
def test_target_reliability_refuses_flags_that_contradict_it(args: list[str], mention: str) -> None:
    result = run_cli("hanoi", "--disks", "3", *args)
    assert result.returncode == 2, result.stderr
    assert mention in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])
