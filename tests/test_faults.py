"""Faults a long run meets, each made to happen for real: a second orchestrator, a full Redis."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from maker_workers import keys
from maker_workers.celery_app import make_app
from maker_workers.domains import hanoi
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.errors import ConfigError, StoreError
from maker_workers.simllm.model import SimConfig
from maker_workers.votes import Notice, Outcome, Snapshot
from orchestrator.cluster.embedded import Embedded, free_port, start_redis
from orchestrator.engine.runner import CommittedStep, Runner, VotingConfig
from orchestrator.engine.store import RunStore
from tests.conftest import run_cli
from tests.faultproxy import FaultProxy


@pytest.fixture(scope="module")
def private() -> Iterator[Embedded]:
    """A cluster of its own: these tests change its Redis's settings."""
    with Embedded(workers=1, concurrency=4, sim=SimConfig(seed=9)) as cluster:
        yield cluster


def test_one_orchestrator_per_run_and_a_lapsed_lease_is_taken_over(private: Embedded) -> None:
    client = redis.Redis.from_url(private.redis_url)
    broker = make_app(private.redis_url)
    first = Runner(client, broker, VotingConfig(lease_s=1.0), HanoiTask(3))
    first.start()  # and then goes silent, as a frozen or killed orchestrator does
    second = Runner(client, broker, VotingConfig(), HanoiTask(3), run_id=first.run_id)
    with pytest.raises(ConfigError, match=r"driven by another orchestrator \(.* pid \d+\)"):
        second.start()
    deadline = time.monotonic() + 10
    while True:  # the first one's lease lapses a second after it was last renewed
        try:
            second.start()
            break
        except ConfigError:
            assert time.monotonic() < deadline
            client.blpop(["never"], timeout=0.2)
    assert second.run() == [[], [], [3, 2, 1]]


def test_a_full_redis_fails_the_run_within_seconds_with_that_reason(private: Embedded) -> None:
    client = redis.Redis.from_url(private.redis_url)
    runner = Runner(client, make_app(private.redis_url), VotingConfig(wait_s=0.5), HanoiTask(10))
    filled_at: list[float] = []

    def fill_at_step_30(step: CommittedStep) -> None:
        if step.step == 30:
            client.config_set("maxmemory", 1)  # noeviction: every write from now on is refused
            filled_at.append(time.monotonic())

    failure: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(fill_at_step_30)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    client.config_set("maxmemory", 0)
    assert failure and isinstance(failure[0], StoreError)
    assert "Redis is full" in str(failure[0]) and "maxmemory" in str(failure[0])
    assert time.monotonic() - filled_at[0] < 10


class LosingBroker:
    """The broker as kombu's Redis transport can be: now and then a sent message is never delivered. Loses it where
    the orchestrator hands a message to Celery (`amqp.send_task_message`)."""

    def __init__(self, broker: Celery, every: int) -> None:
        self.broker, self.every, self.sent, self.lost = broker, every, 0, 0
        self.amqp = _Losing(self)

    def __getattr__(self, name: str) -> Any:  # the rest of the app, as it is
        return getattr(self.broker, name)


class _Losing:
    def __init__(self, owner: LosingBroker) -> None:
        self.owner = owner

    def send_task_message(self, *args: Any, **kwargs: Any) -> None:
        owner = self.owner
        owner.sent += 1
        if owner.sent % owner.every == 0 and owner.sent > 100:  # after the first hundred: latency is known
            owner.lost += 1
            return
        owner.broker.amqp.send_task_message(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # the rest of Celery's AMQP side, as it is
        return getattr(self.owner.broker.amqp, name)


def test_a_lost_task_message_costs_seconds_not_the_whole_sample_timeout(private: Embedded) -> None:
    client = redis.Redis.from_url(private.redis_url)
    broker = LosingBroker(make_app(private.redis_url), every=40)
    # No speculation, so no hedging either: only the adaptive timeout can replace a lost sample. Its cap is 45 s;
    # a loss costs that with the cap alone, seconds with the timeout adapted to the latency (each run here loses 3+).
    voting = VotingConfig(wait_s=0.5, sample_timeout_s=45, sample_timeout_floor_s=1, speculate=0)
    runner = Runner(client, broker, voting, HanoiTask(7))  # type: ignore[arg-type]
    started = time.monotonic()
    assert runner.run() == [[], [], [7, 6, 5, 4, 3, 2, 1]]
    assert broker.lost >= 3
    assert time.monotonic() - started < 40  # each lost one is replaced after 4x the p99 latency (floor 1 s)


class DoublingBroker(LosingBroker):
    """A broker that delivers now and then a message twice, as a publisher re-sending a batch after a broken
    connection does (or Celery redelivering): two workers may call the model for one sample."""

    def __init__(self, broker: Celery, every: int) -> None:
        super().__init__(broker, every)
        self.amqp = _Doubling(self)


class _Doubling(_Losing):
    def send_task_message(self, *args: Any, **kwargs: Any) -> None:
        owner = self.owner
        owner.sent += 1
        owner.broker.amqp.send_task_message(*args, **kwargs)
        if owner.sent % owner.every == 0:
            owner.lost += 1  # here: sent twice
            owner.broker.amqp.send_task_message(*args, **kwargs)


def test_every_call_the_provider_served_is_counted_when_samples_are_delivered_twice(private: Embedded) -> None:
    client = redis.Redis.from_url(private.redis_url)
    broker = DoublingBroker(make_app(private.redis_url), every=3)
    served = f"{private.sim_url}/stats"
    before = httpx.get(served).json()["served"]
    runner = Runner(client, broker, VotingConfig(wait_s=0.5, drain_s=10), HanoiTask(5))  # type: ignore[arg-type]
    assert runner.run() == [[], [], [5, 4, 3, 2, 1]]
    after = httpx.get(served).json()["served"]
    counted = RunStore(client, runner.run_id).stats()
    assert broker.lost >= 10 and counted.get("duplicates", 0) >= 1
    # What the provider billed is what the run counts, the second calls for one sample included.
    assert counted["input_tokens"] == after["input_tokens"] - before["input_tokens"]
    assert counted["output_tokens"] == after["output_tokens"] - before["output_tokens"]
    assert counted.get("duplicate_calls", 0) >= 1


class SilentBroker(LosingBroker):
    """A broker that takes every message and delivers none: no worker writes, no notice comes, no send fails."""

    def __init__(self, broker: Celery) -> None:
        super().__init__(broker, every=1)
        self.amqp = _Silent(self)


class _Silent(_Losing):
    def send_task_message(self, *args: Any, **kwargs: Any) -> None:
        self.owner.sent += 1


def test_a_full_redis_fails_a_waiting_run_within_seconds(private: Embedded) -> None:
    """The run loop writes to Redis every few seconds of its own accord (its lease), so a Redis that fills while it
    waits for workers that cannot record fails the run with that reason, instead of leaving it waiting."""
    client = redis.Redis.from_url(private.redis_url)
    broker = SilentBroker(make_app(private.redis_url))
    runner = Runner(client, broker, VotingConfig(wait_s=0.5), HanoiTask(4))  # type: ignore[arg-type]
    failure: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while broker.sent == 0:  # the run is waiting on samples that never come
        assert time.monotonic() < deadline
        client.blpop(["never"], timeout=0.05)
    client.config_set("maxmemory", 1)  # noeviction: every write from now on is refused
    filled_at = time.monotonic()
    try:
        thread.join(10)
    finally:
        client.config_set("maxmemory", 0)
    assert failure and isinstance(failure[0], StoreError) and "Redis is full" in str(failure[0])
    assert time.monotonic() - filled_at < 5


def test_replies_lost_between_the_orchestrator_and_redis_neither_hang_nor_end_the_run(private: Embedded) -> None:
    """Every client command goes through a proxy that drops replies and resets connections."""
    proxy = FaultProxy(port_of(private.redis_url), drop=0.02, seed=4)
    client = redis.Redis.from_url(proxy.url)
    try:
        runner = Runner(client, make_app(private.redis_url), VotingConfig(wait_s=0.5, drain_s=5), HanoiTask(6))
        started = time.monotonic()
        assert runner.run() == [[], [], [6, 5, 4, 3, 2, 1]]
        assert proxy.dropped >= 5
        assert time.monotonic() - started < 60
        assert RunStore(redis.Redis.from_url(private.redis_url), runner.run_id).answers() == [
            {"move": list(m), "next_state": s} for m, s in hanoi_moves(6)
        ]
    finally:
        proxy.close()


def test_a_lost_blpop_reply_is_never_answered_by_blpop_again_but_by_a_re_read(redis_url: str) -> None:
    """BLPOP pops as it replies: when that reply is lost, the notice is gone. Sent again, BLPOP would hand over the
    next notice as if nothing were missing, and the contest the lost one spoke of would wait for its timeout. The
    run loop's BLPOP is never sent twice: a lost reply comes back as nothing heard, and the loop re-reads Redis."""
    proxy = FaultProxy(port_of(redis_url), drop=0.0)
    client = redis.Redis.from_url(redis_url)
    try:
        runner = Runner(redis.Redis.from_url(proxy.url), make_app(redis_url), VotingConfig(), HanoiTask(3))
        assert runner._next_notices(0.1) == []  # connected through the proxy
        for sample in ("lost", "next"):
            notice = Notice(
                sample_id=runner._sample_prefix + sample,
                step=0,
                input_hash="x",
                outcome=Outcome.VOTE,
                snapshot=Snapshot(samples=1, votes=1),
            )
            client.rpush(keys.notify(runner.run_id), notice.model_dump_json())
        proxy.drop_next = 1  # the reply to the next command: the BLPOP that pops "lost"
        assert runner._next_notices(2.0) == []  # nothing heard: the caller re-reads every open contest
        assert proxy.dropped == 1 and client.llen(keys.notify(runner.run_id)) == 1  # "next" waits its turn
        assert [n.sample_id[-4:] for n in runner._next_notices(2.0)] == ["next"]
    finally:
        proxy.close()
        client.close()


def hanoi_moves(disks: int) -> list[tuple[tuple[int, int, int], list[list[int]]]]:
    state = hanoi.initial_state(disks)
    out = []
    for move in hanoi.optimal_moves(disks):
        state = hanoi.apply_move(state, move)
        out.append((move, state))
    return out


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


DISKS = 9  # long enough a run (about 7 s calm) for several workers to be killed in it


def hanoi_json(*args: str) -> dict:
    result = run_cli("hanoi", "--disks", str(DISKS), "--json", *args, timeout=200)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_lost_replies_everywhere_and_killed_workers_cost_seconds_not_minutes(tmp_path: Path) -> None:
    """The issue's "done when": every client of Redis (orchestrator, its broker, workers, their broker) goes
    through a proxy that drops a reply and resets its connection now and then, and a random worker is killed
    -9 every 2 s (and another started). The run is solved with zero errors, its trace replays, the audit is
    clean, and it takes seconds longer than the same run without faults."""
    with Embedded(workers=1, concurrency=8, sim=SimConfig(seed=3, latency_ms=20)) as cluster:
        calm = hanoi_json("--redis-url", cluster.redis_url)
        proxy = FaultProxy(port_of(cluster.redis_url), drop=0.01, seed=5)
        cluster.start_workers(2, proxy.url)
        cluster.processes[-3].stop()  # the one worker that reached Redis directly
        stop, kills = threading.Event(), []

        def kill_a_worker_every_2_s() -> None:
            rng = random.Random(1)
            while not stop.wait(2):
                alive = [p for p in cluster.processes if p.name.startswith("worker-") and p.popen.poll() is None]
                os.kill(rng.choice(alive).popen.pid, signal.SIGKILL)
                kills.append(time.monotonic())
                cluster.start_workers(1, proxy.url)

        killer = threading.Thread(target=kill_a_worker_every_2_s, daemon=True)
        killer.start()
        trace = tmp_path / "trace.jsonl"
        try:
            stormy = hanoi_json("--redis-url", proxy.url, "--trace", str(trace))
        finally:
            stop.set()
            killer.join(30)
            proxy.close()
        audit = run_cli("audit", stormy["run_id"], "--redis-url", cluster.redis_url, timeout=60)
    lost = f"{proxy.dropped} replies lost, {len(kills)} workers killed"
    print(f"calm {calm['wall_s']:.1f} s, stormy {stormy['wall_s']:.1f} s: {lost}")
    assert stormy["solved"] and stormy["errors"] == 0
    assert proxy.dropped >= 10 and len(kills) >= 2
    assert audit.returncode == 0 and audit.stdout.strip().endswith("audit: clean"), audit.stdout + audit.stderr
    state = hanoi.initial_state(DISKS)
    for line in trace.read_text().splitlines():  # the trace replays move by move to the solved state
        step = json.loads(line)
        state = hanoi.apply_move(state, tuple(step["move"]))
        assert state == step["next_state"]
    assert state == hanoi.goal_state(DISKS)
    assert stormy["wall_s"] < calm["wall_s"] + 30


class SaidSo(logging.Handler):
    """Sets `said` once a record containing `text` is logged."""

    def __init__(self, text: str, said: threading.Event) -> None:
        super().__init__()
        self.text, self.said = text, said

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.said.set()


@pytest.mark.parametrize("stop", ["kill -9", "shutdown"])
def test_a_redis_restart_mid_run_is_ridden_out_by_orchestrator_and_workers(tmp_path: Path, stop: str) -> None:
    """redis-server (with an append-only file, as the compose file runs it) is killed -9, or shut down, right after
    step 20 is committed, from the orchestrator's own thread (so its next command is a read or a write, not a BLPOP,
    which reconnects by itself), and started again 3 s later: orchestrator and workers retry, say so, and the run is
    solved move for move by the same worker process (kombu's closed channel used to stop it:
    maker_workers/transport.py)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    servers = [start_redis(port, str(tmp_path), aof=True)]
    said_so = threading.Event()
    saying = SaidSo("a Redis command: Redis is unreachable", said_so)  # the orchestrator's retries, on stderr
    logging.getLogger("maker.redis").addHandler(saying)
    try:
        with Embedded(workers=1, concurrency=4, sim=SimConfig(seed=11, latency_ms=100)) as cluster:
            worker = cluster.start_workers(1, url)[0]
            cluster.processes[-2].stop()  # the worker of the embedded Redis

            def restart_later() -> None:
                servers.append(start_redis(port, str(tmp_path), aof=True))

            def worker_alive() -> None:  # a dead worker fails the test at once, not at pytest's timeout
                if worker.popen.poll() is not None:
                    raise AssertionError(f"the worker died:\n{worker.tail()}")

            voting = VotingConfig(wait_s=0.5)
            runner = Runner(redis.Redis.from_url(url), make_app(url), voting, HanoiTask(6), health_check=worker_alive)
            restarter = threading.Timer(3.0, restart_later)

            def on_commit(step: CommittedStep) -> None:
                if step.step == 20:
                    if stop == "kill -9":
                        servers[0].kill()
                    else:
                        with contextlib.suppress(redis.ConnectionError):
                            redis.Redis.from_url(url).shutdown(nosave=True)
                    restarter.start()

            assert runner.run(on_commit) == [[], [], [6, 5, 4, 3, 2, 1]]
            restarter.join(30)
            assert len(servers) == 2, "Redis was not restarted mid-run"
            assert RunStore(redis.Redis.from_url(url), runner.run_id).answers() == [
                {"move": list(m), "next_state": s} for m, s in hanoi_moves(6)
            ]
            assert said_so.is_set()  # the orchestrator retried its command, and said so
            assert worker.popen.poll() is None, worker.tail()  # the one worker there is lived through it
            assert "Redis is unreachable" in worker.tail()  # and retried its own, and said so
    finally:
        logging.getLogger("maker.redis").removeHandler(saying)
        for server in servers:
            server.stop()


def test_a_closed_broker_channel_raises_a_connection_error_that_kombu_and_celery_handle(redis_url: str) -> None:
    """kombu's own transport raised AttributeError here, which stopped the worker (an "unrecoverable error")."""
    with make_app(redis_url).connection_for_write() as connection:
        channel = connection.channel()
        channel.close()
        with pytest.raises(redis.ConnectionError, match="closed"):
            channel._get_pool()
        assert isinstance(redis.ConnectionError(), connection.connection_errors)


def test_a_rediss_broker_still_speaks_tls_and_keeps_its_scheme() -> None:
    """The fixed transport is installed under kombu's own aliases: kombu turns TLS on by the alias name, and
    Flower picks its broker view by the URL's scheme."""
    for url, tls in (("rediss://:pw@127.0.0.1:1/0?ssl_cert_reqs=required", True), ("redis://127.0.0.1:1/0", False)):
        connection = make_app(url).connection_for_write()
        assert type(connection.transport).__module__ == "maker_workers.transport"
        assert bool(connection.ssl) is tls and connection.as_uri().split("://")[0] == url.split("://")[0]


def test_a_hedge_is_a_sample_like_any_other_and_passes_the_budget_check(redis_url: str) -> None:
    from maker_workers.errors import BudgetSpent
    from maker_workers.votes import Contest
    from orchestrator.engine.runner import _Open

    runner = Runner(redis.Redis.from_url(redis_url), make_app(redis_url), VotingConfig(max_cost_usd=0.01), HanoiTask(3))
    runner.spend.nusd = 10**8  # $0.10 spent of $0.01
    runner._hedge_after_s = 0.0  # the front's samples are slow: it would send one more
    contest = Contest(run_id=runner.run_id, step=0, input_hash="x", k=3)
    slow = _Open(step=0, state=[], previous=None, contest=contest, known=Snapshot(), sent=1, in_flight={"s": 0.0})
    with pytest.raises(BudgetSpent):
        runner._hedge([slow], slow, time.monotonic())
    assert not slow.in_flight.keys() - {"s"}  # nothing was sent


def test_a_stop_flag_the_driver_did_not_write_ends_the_run_instead_of_a_storm_of_skipped_samples(
    private: Embedded,
) -> None:
    """Workers skip every sample of a stopped run. The run's driver hears the skips, reads why, and ends the run
    (here the flag is written past the fencing, as a pre-fencing orchestrator did): it never tops the contest up
    with samples that are skipped again, hundreds a second."""
    from maker_workers.errors import Cancelled

    client = redis.Redis.from_url(private.redis_url)
    broker = LosingBroker(make_app(private.redis_url), every=10**9)  # counts what is sent, loses nothing
    runner = Runner(client, broker, VotingConfig(wait_s=0.5), HanoiTask(8))  # type: ignore[arg-type]

    def stop_at_20(step: CommittedStep) -> None:
        if step.step == 20:
            client.hset(keys.meta(runner.run_id), "stop", "ended")

    started = time.monotonic()
    with pytest.raises(Cancelled, match="stop flag says 'ended'"):
        runner.run(stop_at_20)
    assert time.monotonic() - started < 30
    assert broker.sent < 400  # the run's own samples, not a storm of replacements
