"""Long runs, outside the default test run: `python -m pytest -m slow`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("speculate", ["0", "4"])
def test_twelve_disks_with_zero_errors(speculate: str) -> None:
    result = run_cli("hanoi", "--disks", "12", "--speculate", speculate, "--json", timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert (report["steps"], report["errors"], report["solved"]) == (4095, 0, True)


@pytest.mark.slow
def test_the_live_estimate_raises_k_on_a_real_drift_and_seldom_on_noise() -> None:
    """benchmarks/estimator.py's measurement, at fewer runs: a million steps at the plan's edge."""
    estimator = [sys.executable, "benchmarks/estimator.py", "--runs", "40", "--json"]
    done = subprocess.run(estimator, capture_output=True, text=True, check=True, cwd=ROOT)
    figures = json.loads(done.stdout)
    assert figures["false_raise_rate"] <= 0.05
    assert figures["drift_missed"] == 0 and figures["drift_caught_after_steps_max"] < 5_000


@pytest.mark.slow
def test_three_12_disk_runs_at_the_sims_default_keep_the_planned_k_under_adaptive_k() -> None:
    for _ in range(3):
        done = run_cli(
            "hanoi",
            "--disks",
            "12",
            "--target-reliability",
            "0.99",
            "--p",
            "0.99",
            "--adaptive-k",
            "--json",
            timeout=600,
        )
        report = json.loads(done.stdout.splitlines()[-1])
        assert done.returncode == 0, done.stderr[-2000:]
        assert report["k"] == 3 and report["k_changes"] == [[0, 3]] and "k raised" not in done.stderr
