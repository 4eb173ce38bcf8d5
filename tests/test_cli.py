"""`maker` as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from maker_workers import keys
from maker_workers.celery_app import make_app
from maker_workers.domains import hanoi
from orchestrator.cluster.embedded import Embedded, free_port
from orchestrator.engine.runner import Runner, VotingConfig
from tests.conftest import OrchestratorDied, children_of, dies_after, run_cli, started_cli

REPORT_FIELDS = {
    "run_id",
    "disks",
    "steps",
    "solved",
    "errors",
    "k",
    "samples",
    "red_flags",
    "late_votes",
    "max_rounds",
    "votes_per_step",
    "input_tokens",
    "output_tokens",
    "wall_s",
}


def test_hanoi_6_disks_on_the_embedded_default(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    result = run_cli("hanoi", "--disks", "6", "--json", "--trace", str(trace), "--seed", "4")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.keys() >= REPORT_FIELDS
    assert (report["disks"], report["steps"], report["solved"], report["errors"]) == (6, 63, True, 0)
    assert sum(report["votes_per_step"].values()) == 63
    assert all(int(votes) >= report["k"] for votes in report["votes_per_step"])
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(63))
    state = hanoi.initial_state(6)
    for line in lines:  # the trace replays legally, and each committed next_state is the legal successor
        assert set(line) >= {"step", "move", "next_state", "samples", "votes"}
        state = hanoi.apply_move(state, tuple(line["move"]))
        assert line["next_state"] == state
    assert state == hanoi.goal_state(6)
    assert report["samples"] >= sum(line["samples"] for line in lines)
    assert "steps" in result.stderr  # the progress bar


def test_hanoi_on_an_existing_cluster(cluster: Embedded) -> None:
    result = run_cli("hanoi", "--disks", "3", "--redis-url", cluster.redis_url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["errors"] == 0


def test_a_run_that_is_not_solved_exits_non_zero() -> None:
    # at a 40% error rate three samples rarely agree: some step hits the cap and fails, never guessed
    result = run_cli("hanoi", "--disks", "6", "--sim-error-rate", "0.4", "--max-samples", "3", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["solved"] is False and "3 samples without a 3-vote margin" in report["failure"]
    assert "run failed" in result.stderr


def test_bad_input_gets_one_clear_message() -> None:
    cases = [
        (["hanoi", "--disks", "0"], "--disks"),
        (["hanoi", "--sim-error-rate", "0.9"], "--sim-error-rate"),
        (["hanoi", "--redis-url", "redis://127.0.0.1:1/0", "--sim-error-rate", "0.1"], "--redis-url"),
        (["hanoi", "--k", "0"], "--k"),
        (["hanoi", "--k", "5", "--max-samples", "4"], "--max-samples"),
    ]
    for args, mention in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert mention in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_an_unreachable_redis_is_a_clear_error() -> None:
    started = time.monotonic()
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_cli("hanoi", "--disks", "2", "--redis-url", url, MAKER_REDIS_WAIT_S="1.5")
    assert time.monotonic() - started < 10  # waited 1.5 s for a Redis that may be starting, not the default 15
    assert result.returncode == 1
    said = " ".join(result.stderr.split())
    assert "cannot reach Redis" in said and "waited 1.5 s for it; MAKER_REDIS_WAIT_S sets how long" in said
    assert "Traceback" not in result.stderr


def test_bench_prints_its_figures() -> None:
    result = run_cli("bench", "--disks", "3", "--noop-tasks", "200", "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)  # the one line on stdout; the table went to stderr
    # the headline: the sim inside the workers; beside it, the same over HTTP, the sim's process then measured too
    for phase, parts in ((figures, {"orchestrator", "worker", "redis"}), (figures["http"], {"sim"})):
        assert phase["steps"] == 7 and phase["errors"] == 0
        assert phase["engine_samples_per_s"] > 0 and phase["noop_tasks_per_s"] > 0 and phase["step_overhead_ms"] > 0
        assert abs(phase["ratio"] - phase["engine_samples_per_s"] / phase["noop_tasks_per_s"]) < 0.01
        assert parts <= phase["engine_cpu_ms_per_sample"].keys()
        assert 0 <= phase["wasted_samples"] < phase["samples"]
    assert (figures["sim"], figures["http"]["sim"]) == ("in-process", "http")
    assert "per-step overhead" in result.stderr


def test_a_run_resumes_from_the_command_line(cluster: Embedded) -> None:
    client = redis.Redis.from_url(cluster.redis_url)
    first = Runner(client, make_app(cluster.redis_url), VotingConfig(), hanoi.HanoiTask(5))
    with pytest.raises(OrchestratorDied):
        first.run(dies_after(12))
    result = run_cli("hanoi", "--disks", "5", "--redis-url", cluster.redis_url, "--resume", first.run_id, "--json")
    assert result.returncode == 0, result.stderr
    assert "resuming at step 13" in result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert (report["run_id"], report["steps"], report["errors"], report["solved"]) == (first.run_id, 31, 0, True)
    # The lease goes with the run's end (the drain of samples in flight took it back for its lease's 15 s), and
    # resuming the finished run says it is finished, naming no holder and printing no figures.
    assert not client.exists(keys.lease(first.run_id))
    again = run_cli("hanoi", "--disks", "5", "--redis-url", cluster.redis_url, "--resume", first.run_id)
    assert again.returncode == 2 and f"run {first.run_id} is finished" in again.stderr
    assert "driven by another orchestrator" not in again.stderr and "steps/s" not in again.stdout


def test_resume_errors_are_clear(cluster: Embedded) -> None:
    unknown = run_cli("hanoi", "--disks", "5", "--redis-url", cluster.redis_url, "--resume", "nope")
    assert unknown.returncode == 1 and "no run nope" in unknown.stderr
    embedded = run_cli("hanoi", "--resume", "abc")
    assert embedded.returncode == 2 and "--resume needs --redis-url" in embedded.stderr


def test_a_bad_worker_setting_is_named_before_anything_starts() -> None:
    result = run_cli("hanoi", "--disks", "2", MAKER_MAX_OUTPUT_TOKENS="lots")
    assert result.returncode == 2
    assert "MAKER_MAX_OUTPUT_TOKENS" in result.stderr and "Traceback" not in result.stderr


def test_with_json_a_run_whose_cluster_dies_still_reports_how_far_it_got() -> None:
    """A dead worker ends the run, and --json still prints the report (with the failure) as its last line."""
    with started_cli("hanoi", "--disks", "14", "--json") as proc:
        worker = next(pid for pid in children_of(proc.pid) if "maker0@" in Path(f"/proc/{pid}/cmdline").read_text())
        os.kill(worker, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    report = json.loads(out.splitlines()[-1])
    assert report["solved"] is False and "worker-0 exited" in report["failure"]


def test_version_is_the_packages_in_the_cli_and_every_json_report() -> None:
    from importlib.metadata import version

    shown = run_cli("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"maker {version('maker')}"
    report = run_cli("hanoi", "--disks", "2", "--json")
    assert json.loads(report.stdout.splitlines()[-1])["version"] == version("maker")


def test_a_run_whose_stderr_is_a_log_writes_whole_progress_lines_text_or_json() -> None:
    done = run_cli("hanoi", "--disks", "9", "--log-every", "0.2", "--sim-latency-ms", "2")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(("progress:", "end:"))]
    assert len(lines) >= 4 and lines[-1].startswith("end: step 511/511 (100.0%)")
    assert all("steps/s" in line and "samples" in line for line in lines)
    logged = run_cli("hanoi", "--disks", "9", "--log-every", "0.2", "--sim-latency-ms", "2", "--log-format", "json")
    events = [json.loads(line) for line in logged.stderr.splitlines() if line.startswith("{")]
    assert len(events) >= 4 and {e["event"] for e in events} == {"progress", "end"}
    last = events[-1]
    assert (last["event"], last["step"], last["total"], last["percent"]) == ("end", 511, 511, 100.0)
    assert {"steps_per_s", "eta_s", "samples", "red_flags", "cost_usd", "k", "p_estimate", "reliability"} <= last.keys()
