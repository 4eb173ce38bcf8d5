"""Faults a long run meets, each made to happen for real: a second orchestrator, a full Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from maker_workers.celery_app import make_app
from maker_workers.domains import hanoi
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.errors import ConfigError, StoreError
from maker_workers.simllm.model import SimConfig
from orchestrator.embedded import Embedded
from orchestrator.runner import CommittedStep, Runner, VotingConfig
from orchestrator.store import RunStore
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
    """The broker as kombu's Redis transport can be: now and then a sent message is never delivered."""

    def __init__(self, broker: Celery, every: int) -> None:
        self.broker, self.every, self.sent, self.lost = broker, every, 0, 0

    def send_task(self, *args: Any, **kwargs: Any) -> None:
        self.sent += 1
        if self.sent % self.every == 0 and self.sent > 100:  # after the first hundred: latency is known
            self.lost += 1
            return
        self.broker.send_task(*args, **kwargs)


def test_a_lost_task_message_costs_seconds_not_the_whole_sample_timeout(private: Embedded) -> None:
    client = redis.Redis.from_url(private.redis_url)
    broker = LosingBroker(make_app(private.redis_url), every=40)
    voting = VotingConfig(wait_s=0.5, sample_timeout_s=300, sample_timeout_floor_s=1)
    runner = Runner(client, broker, voting, HanoiTask(7))  # type: ignore[arg-type]
    started = time.monotonic()
    assert runner.run() == [[], [], [7, 6, 5, 4, 3, 2, 1]]
    assert broker.lost >= 3
    assert time.monotonic() - started < 40  # each lost one is replaced after 4x the p99 latency (floor 1 s)


def test_replies_lost_between_the_orchestrator_and_redis_neither_hang_nor_end_the_run(private: Embedded) -> None:
    """Every client command goes through a proxy that drops replies and resets connections."""
    proxy = FaultProxy(int(private.redis_url.rsplit(":", 1)[1].split("/")[0]), drop=0.02, seed=4)
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


def hanoi_moves(disks: int) -> list[tuple[tuple[int, int, int], list[list[int]]]]:
    state = hanoi.initial_state(disks)
    out = []
    for move in hanoi.optimal_moves(disks):
        state = hanoi.apply_move(state, move)
        out.append((move, state))
    return out
