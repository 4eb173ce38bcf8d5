"""`maker calibrate` against the simulated LLM through real clusters, and its file feeding `maker plan` and k."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.planning.calibrate import _measure, wilson
from tests.conftest import run_cli
from tests.test_plan import k_min_of

RATES = (0.02, 0.1, 0.25)
SAMPLES = 400


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def calibrations(tmp_path_factory: pytest.TempPathFactory) -> dict[float, tuple[dict[str, Any], Path]]:
    """One calibration per sim error rate, each on its own embedded cluster (the rate is the sim's setting).
    One worker thread, so the sim answers in the order the samples were sent: the same figures every time."""
    found = {}
    for rate in RATES:
        out = tmp_path_factory.mktemp("calibration") / f"{rate}.json"
        result = run_cli(
            "calibrate", "--disks", "10", "--samples", str(SAMPLES), "--sim-error-rate", str(rate),
            "--workers", "1", "--concurrency", "1", "--draw-seed", "0", "--json", "--out", str(out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "samples" in result.stderr  # the progress bar
        found[rate] = (last_json(result.stdout), out)
    return found


@pytest.mark.parametrize("rate", RATES)
def test_calibration_recovers_the_sims_error_rate_inside_its_interval(
    calibrations: dict[float, tuple[dict[str, Any], Path]], rate: float
) -> None:
    got, _ = calibrations[rate]
    interval = f"[{got['p_low']:.4f}, {got['p_high']:.4f}]"
    print(f"\nsim error {rate}: p {got['p']:.4f} in {interval}, valid rate {got['valid_rate']:.4f}")
    assert got["p_low"] <= 1 - rate <= got["p_high"]
    assert got["p"] == got["correct"] / got["votes"]
    assert (got["p_low"], got["p_high"]) == pytest.approx(wilson(got["correct"], got["votes"]))
    assert got["samples"] == got["answered"] == got["votes"] + got["red_flags"] + got["errors"] == SAMPLES
    # red flags: the sim's defaults, malformed 1% and too long 0.5%, so v = 0.985
    given = got["votes"] + got["red_flags"]
    low, high = wilson(got["votes"], given)
    assert low <= 0.985 <= high and got["valid_rate"] == got["votes"] / given
    assert set(got["red_flags_by_reason"]) <= {"parse", "too_long", "truncated"}
    assert sum(got["red_flags_by_reason"].values()) == got["red_flags"]
    tokens = got["output_tokens"]
    assert 0 < tokens["p50"] <= tokens["p90"] <= tokens["p99"] and tokens["mean"] > 0
    buckets = got["error_by_length"]
    assert [b["tokens"] for b in buckets] == ["<200", "200-400", "400-700", ">=700"]
    assert sum(b["votes"] for b in buckets) == got["votes"]
    assert sum(b["wrong"] for b in buckets) == got["votes"] - got["correct"]
    assert got["models"] == ["sim:sim-hanoi"] and got["cost_usd"] == 0.0 and got["cost_per_sample_usd"] == 0.0


def test_the_out_file_is_the_json_report(calibrations: dict[float, tuple[dict[str, Any], Path]]) -> None:
    got, out = calibrations[0.1]
    assert json.loads(out.read_text()) == got


def test_a_calibration_plans_k_at_the_pessimistic_end_of_p(
    calibrations: dict[float, tuple[dict[str, Any], Path]],
) -> None:
    got, out = calibrations[0.25]
    steps, target = 2**20 - 1, 0.99
    result = run_cli("plan", "--from-calibration", str(out), "--steps", str(steps), "--target", str(target), "--json")
    assert result.returncode == 0, result.stderr
    planned = last_json(result.stdout)
    assert planned["k_min"] == k_min_of(got["p"], steps, target)
    assert planned["pessimistic"]["p"] == got["p_low"]
    assert planned["pessimistic"]["k_min"] == k_min_of(got["p_low"], steps, target) >= planned["k_min"]
    assert planned["valid_rate"] == got["valid_rate"]
    assert planned["projected_cost_usd"] == 0.0  # the sim's price


def test_target_reliability_takes_k_from_the_calibrations_pessimistic_p(
    calibrations: dict[float, tuple[dict[str, Any], Path]],
) -> None:
    got, out = calibrations[0.25]
    result = run_cli(
        "hanoi", "--disks", "4", "--target-reliability", "0.99", "--from-calibration", str(out),
        "--sim-error-rate", "0.25", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    k = k_min_of(got["p_low"], 15, 0.99)
    assert last_json(result.stdout)["k"] == k
    assert f"k={k}" in result.stderr and "low end" in result.stderr


def test_calibration_runs_in_parallel_on_a_cluster_of_many_threads() -> None:
    result = run_cli("calibrate", "--disks", "12", "--samples", "300", "--sim-latency-ms", "20", "--json")
    assert result.returncode == 0, result.stderr
    got = last_json(result.stdout)
    assert got["answered"] == 300 and got["p"] is not None
    assert got["wall_s"] < 300 * 0.020 / 2  # 2 workers x 8 threads: far below one sample after another


def test_wilson_interval_matches_known_values() -> None:
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


@given(st.integers(min_value=1, max_value=10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_holds_the_measured_share(counts: tuple[int, int]) -> None:
    successes, n = counts
    low, high = wilson(successes, n)
    assert 0.0 <= low <= successes / n <= high <= 1.0


def test_calibration_of_a_spec_task_draws_its_steps_from_a_reference_runs_trace(tmp_path: Path) -> None:
    trace = tmp_path / "multiply.jsonl"
    result = run_cli("run", "examples/multiply.yaml", "--trace", str(trace), "--json")
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "calibrate", "examples/multiply.yaml", "--trace", str(trace), "--samples", "60", "--sim-error-rate", "0.2",
        "--workers", "1", "--concurrency", "1", "--draw-seed", "0", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = last_json(result.stdout)
    assert got["task"] == "multiply" and got["disks"] is None and got["steps"] == 43
    assert got["samples"] == 60 and got["answered"] == 60
    assert got["p_low"] <= 0.8 <= got["p_high"]

    missing = run_cli("calibrate", "examples/multiply.yaml", "--samples", "5")
    assert missing.returncode == 2 and "--trace" in missing.stderr
    other = tmp_path / "other.jsonl"
    other.write_text(trace.read_text().replace('"pos": 0,', '"pos": 7,', 1))
    wrong = run_cli("calibrate", "examples/multiply.yaml", "--trace", str(other), "--samples", "5")
    said = "".join(wrong.stderr.split())  # the console wraps long lines
    assert wrong.returncode == 2 and str(other) in said and "anothertask" in said


def test_a_calibration_measures_the_share_of_input_read_from_the_prompt_cache() -> None:
    stats = {"input_tokens": 12_000, "cached_input_tokens": 9_000, "cache_write_input_tokens": 1_000}
    assert _measure("r", "t", None, 10, 0, {}, {}, stats, 1.0).cached_share == 0.75  # what `maker plan` takes
    assert _measure("r", "t", None, 10, 0, {}, {}, {}, 1.0).cached_share is None
