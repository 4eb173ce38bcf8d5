"""The engine's numbers for monitoring: Prometheus metrics from the orchestrator and from each worker process,
scraped over HTTP during and after real runs; `maker status` and `maker watch` reading runs from Redis alone."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from maker_workers import keys
from maker_workers.simllm.model import SimConfig
from orchestrator import api
from orchestrator.cluster.connect import ClusterOptions
from orchestrator.cluster.embedded import Embedded, Process, free_port, worker_argv
from orchestrator.cluster.metrics import RunMetrics
from orchestrator.cluster.model_options import ModelOptions
from orchestrator.engine.runner import CommittedStep, VotingConfig
from tests.conftest import ROOT, run_cli, user_env

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_pair() -> int:
    """A port p with p + 1 free too: two workers' metrics ports."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@pytest.fixture(scope="module")
def monitored() -> Iterator[Embedded]:
    """Two workers serving metrics, a model that answers some 429s and is priced, a shared rate limit that
    makes workers wait, and some malformed answers (red flags)."""
    sim = SimConfig(seed=5, rate_429=0.04, retry_after_s=0.01, malformed_rate=0.05)
    models = ModelOptions(rpm=6000, price_in=1.0, price_out=4.0)
    with Embedded(workers=2, concurrency=4, sim=sim, models=models, metrics_port=free_pair()) as cluster:
        yield cluster


def scrape(port: int) -> Series:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(series: Series, name: str, **labels: str) -> float:
    """The sum of `name`'s series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (n, have), value in series.items() if n == name and wanted <= have)


def by_label(series: Series, name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for (n, have), value in series.items():
        if n == name and value:
            key = dict(have)[label]
            found[key] = found.get(key, 0) + value
    return found


def all_workers(cluster: Embedded) -> Series:
    """Every worker process's series added up, as Prometheus would sum them."""
    summed: Series = {}
    for port in cluster.metrics_ports:
        for key, value in scrape(port).items():
            summed[key] = summed.get(key, 0) + value
    return summed


def delta(after: Series, before: Series) -> Series:
    return {key: value - before.get(key, 0) for key, value in after.items()}


def test_the_orchestrator_and_each_worker_count_what_the_runs_report_says(monitored: Embedded) -> None:
    assert len(monitored.metrics_ports) == 2 and len(set(monitored.metrics_ports)) == 2  # one port per process
    before = all_workers(monitored)
    port = free_port()
    metrics = RunMetrics(port, "127.0.0.1")
    during: list[Series] = []

    def on_step(step: CommittedStep) -> None:
        metrics.step(step)
        if step.step == 10:  # the run loop waits while the scrape reads Redis: a reading at a known point
            during.append(scrape(port))

    try:
        hooks = api.Hooks(on_runner=metrics.watch, on_step=on_step)
        report = api.run_hanoi(
            5, voting=VotingConfig(k=2), cluster=ClusterOptions(redis_url=monitored.redis_url), hooks=hooks
        )
        after = scrape(port)
    finally:
        metrics.close()
    assert report.solved and report.errors == 0 and report.duplicates == 0
    run = report.run_id

    # During the run: step 10 is committed, and the counts so far never exceed the final ones.
    assert total(during[0], "maker_run_steps_decided_total", run_id=run) == 11
    assert 0 < total(during[0], "maker_run_samples_total", run_id=run) <= report.samples

    # After it: the orchestrator's figures are the report's.
    assert total(after, "maker_run_steps_decided_total", run_id=run) == report.steps == 31
    assert total(after, "maker_run_samples_total", run_id=run) == report.samples
    outcomes = by_label(after, "maker_run_samples_total", "outcome")
    assert outcomes.get("vote", 0) == report.votes and outcomes.get("late", 0) == report.late_votes
    assert outcomes.get("red_flag", 0) == report.red_flags > 0
    assert by_label(after, "maker_run_red_flags_total", "reason") == report.red_flags_by_reason
    assert total(after, "maker_run_tokens_total", kind="input") == report.input_tokens
    assert total(after, "maker_run_tokens_total", kind="output") == report.output_tokens
    assert report.cost_usd and total(after, "maker_run_cost_usd_total") == pytest.approx(report.cost_usd)
    assert total(after, "maker_run_rounds_per_step_count", run_id=run) == report.steps
    assert total(after, "maker_run_rounds_per_step_bucket", le=f"{float(report.max_rounds)}") == report.steps
    assert total(after, "maker_run_rounds_per_step_bucket", le=f"{report.max_rounds - 1.0}") < report.steps
    assert total(after, "maker_run_samples_in_flight", run_id=run) == 0
    assert total(after, "maker_run_k", run_id=run) == 2

    # The workers' figures, added up over both processes, are the run's too.
    workers = delta(all_workers(monitored), before)
    drawn = by_label(workers, "maker_worker_samples_total", "outcome")
    assert sum(drawn.get(o, 0) for o in ("vote", "red_flag", "error", "late")) == report.samples
    assert drawn.get("red_flag", 0) == report.red_flags
    assert by_label(workers, "maker_worker_red_flags_total", "reason") == report.red_flags_by_reason
    assert total(workers, "maker_worker_tokens_total", kind="input") == report.input_tokens
    assert total(workers, "maker_worker_tokens_total", kind="output") == report.output_tokens
    assert total(workers, "maker_worker_cost_usd_total") == pytest.approx(report.cost_usd)
    # Every provider call is timed: the ones that answered (one per sample drawn) and the ones that failed.
    errors = by_label(workers, "maker_worker_provider_errors_total", "status")
    answered = sum(drawn.get(o, 0) for o in ("vote", "red_flag", "late", "duplicate"))
    assert total(workers, "maker_worker_provider_latency_seconds_count") == answered + sum(errors.values())
    assert errors.get("429", 0) > 0 and set(errors) == {"429"}
    # Each wait (the shared rate, or a 429's Retry-After) is counted as the event the run's stream has.
    client = redis.Redis.from_url(monitored.redis_url)
    waits = [e for _, e in client.xrange(keys.events(run)) if e[b"kind"] == b"rate_limit_wait"]
    client.close()
    assert total(workers, "maker_worker_rate_limit_waits_total") == len(waits) > 0
    assert total(workers, "maker_worker_samples_in_flight") == 0


def await_scrape(port: int, proc: subprocess.Popen[str], until: str, deadline_s: float = 60) -> Series:
    """Scrape `port` until series `until` is above 0, while `proc` runs."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            series = scrape(port)
        except httpx.HTTPError:  # not listening yet
            continue
        if total(series, until) > 0:
            return series
    raise AssertionError(f"{until} never rose on port {port} (the run exited with {proc.poll()})")


def test_maker_hanoi_serves_metrics_and_status_and_watch_follow_it_from_redis(monitored: Embedded) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "orchestrator.interfaces.cli", "hanoi", "--disks", "6", "--json"]
    argv += ["--redis-url", monitored.redis_url, "--metrics-port", str(port)]
    with subprocess.Popen(
        argv, cwd=ROOT, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        during = await_scrape(port, proc, "maker_run_steps_decided_total")
        (run_id,) = {dict(labels)["run_id"] for name, labels in during if name == "maker_run_k"}
        running = run_cli("status", run_id, "--json", "--redis-url", monitored.redis_url)
        frame = run_cli("watch", run_id, "--once", "--redis-url", monitored.redis_url)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["run_id"] == run_id
    assert total(during, "maker_run_samples_total") <= report["samples"]

    assert running.returncode == 0, running.stderr
    live = json.loads(running.stdout)
    assert live["state"] in ("running", "done") and live["steps_done"] <= 63 and live["total_steps"] == 63
    assert frame.returncode == 0 and f"run {run_id}" in frame.stdout and "samples" in frame.stdout

    done = run_cli("status", run_id, "--json", "--redis-url", monitored.redis_url)
    final = json.loads(done.stdout)
    assert (final["state"], final["steps_done"], final["k"]) == ("done", 63, report["k"])
    for field in ("samples", "votes", "red_flags", "red_flags_by_reason", "late_votes", "max_rounds", "cost_usd"):
        assert final[field] == report[field], field
    assert len(final["workers"]) == 2  # both worker processes recorded samples
    assert final["eta_s"] is None and final["last_events"]

    every = run_cli("status", "--redis-url", monitored.redis_url)
    line = next(line for line in every.stdout.splitlines() if line.startswith(run_id))
    assert "done" in line and "63/63 steps" in line

    # Without --once, watch ends by itself when the run has ended.
    ended = run_cli("watch", run_id, "--redis-url", monitored.redis_url, timeout=30)
    assert ended.returncode == 0 and "done" in ended.stdout


def test_status_and_watch_refuse_bad_input_with_one_message(monitored: Embedded) -> None:
    unknown = run_cli("watch", "no-such-run", "--once", "--redis-url", monitored.redis_url)
    assert unknown.returncode == 2 and "no run 'no-such-run'" in unknown.stderr
    nowhere = run_cli("status")
    assert nowhere.returncode == 2 and "--redis-url" in nowhere.stderr
    malformed = run_cli("status", "a{b}", "--redis-url", monitored.redis_url)
    assert malformed.returncode == 2 and "run id" in malformed.stderr


def test_a_taken_metrics_port_is_refused_before_anything_starts(monitored: Embedded) -> None:
    taken = monitored.metrics_ports[0]
    result = run_cli("hanoi", "--disks", "3", "--metrics-port", str(taken))
    assert result.returncode == 2 and f"--metrics-port {taken}" in result.stderr
    assert "embedded cluster up" not in result.stderr
    # A second worker process on the same port stops at start, saying why.
    env = {"MAKER_REDIS_URL": monitored.redis_url, "MAKER_METRICS_PORT": str(taken), "MAKER_SIM_URL": monitored.sim_url}
    worker = Process("worker-clash", worker_argv(2, "clash"), "maker worker ready", env)
    assert worker.popen.wait(timeout=60) != 0
    worker.stop()
    assert f"MAKER_METRICS_PORT {taken}" in worker.tail() and "its own" in worker.tail()


def test_the_embedded_default_gives_each_worker_its_own_port_from_maker_metrics_port() -> None:
    base = free_pair()
    result = run_cli("hanoi", "--disks", "2", MAKER_METRICS_PORT=str(base))
    assert result.returncode == 0, result.stderr  # two workers on one port: the second would not start
    assert f"worker metrics on ports {base}, {base + 1}" in result.stderr
