"""A takeover, the way it happens: the orchestrator freezes (SIGSTOP: a VM pause, a network split) past its lease,
the user resumes the run from a second one as the README invites, and then the first wakes up. The second must
finish unhindered; the first must find its lease gone, say so, and write nothing (its stop flag would have made
the workers skip every sample of the run the second was driving)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from maker_workers.simllm.model import SimConfig
from orchestrator.cluster.embedded import Embedded
from tests.conftest import cli_process, run_cli


@pytest.fixture(scope="module")
def slow() -> Iterator[Embedded]:
    """A cluster whose model takes a few milliseconds, so that a run lasts long enough to be frozen mid-way."""
    with Embedded(workers=2, concurrency=4, sim=SimConfig(seed=3, latency_ms=4.0)) as running:
        yield running


def status(url: str, run_id: str) -> dict:
    done = run_cli("status", run_id, "--redis-url", url, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def unfinished_run(url: str) -> str | None:
    listed = json.loads(run_cli("status", "--redis-url", url, "--json").stdout)
    going = [r["run_id"] for r in listed if r["state"] in ("running", "stalled")]
    return going[0] if going else None


def test_a_frozen_orchestrator_that_wakes_after_a_takeover_stops_touching_nothing(slow: Embedded) -> None:
    url = slow.redis_url
    first = cli_process("hanoi", "--disks", "10", "--redis-url", url, "--json")
    try:
        deadline = time.monotonic() + 60
        run_id = None
        while run_id is None or status(url, run_id)["steps_done"] < 30:
            assert time.monotonic() < deadline and first.poll() is None, "the first run never got going"
            run_id = run_id or unfinished_run(url)
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGSTOP)
        frozen_at = status(url, run_id)["steps_done"]

        # The lease lapses 15 s after the frozen one last renewed it; until then a resume is refused, by name.
        deadline = time.monotonic() + 30
        while True:
            second = run_cli("hanoi", "--disks", "10", "--redis-url", url, "--resume", run_id, "--json", timeout=180)
            if second.returncode != 2 or "driven by another orchestrator" not in second.stderr:
                break
            assert time.monotonic() < deadline, second.stderr
            # Held when the resume was refused; the lease may lapse between that refusal and this read.
            assert status(url, run_id)["state"] in ("running", "stalled")
            time.sleep(1)
        assert second.returncode == 0, second.stderr
        report = json.loads(second.stdout.splitlines()[-1])
        assert report["solved"] and report["errors"] == 0 and report["steps"] == 1023
        assert f"resuming at step {frozen_at}" in second.stderr or "resuming at step" in second.stderr
        assert status(url, run_id)["state"] == "done"

        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=60)
        assert first.returncode != 0
        assert f"run {run_id} was taken over by another orchestrator" in err, err
        # It wrote nothing on its way out: the run stays done, no stop flag or failure of its own.
        after = status(url, run_id)
        assert (after["state"], after["failure"], after["steps_done"]) == ("done", None, 1023)
        audit = run_cli("audit", run_id, "--redis-url", url, "--json")
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
            first.wait()
