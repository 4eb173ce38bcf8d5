"""Long runs, outside the default test run: `python -m pytest -m slow`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("speculate", ["0", "4"])
def test_twelve_disks_with_zero_errors(speculate: str) -> None:
    result = run_cli("hanoi", "--disks", "12", "--speculate", speculate, "--json", timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert (report["steps"], report["errors"], report["solved"]) == (4095, 0, True)
