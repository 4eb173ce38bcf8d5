"""A run's persistence: resume checks, the once-only commit, progress as any machine reads it.

fakeredis serves where only plain commands are used (no server to start, so these run in milliseconds);
the commit is a Lua script, which fakeredis runs only with an extra interpreter, so it gets the real server.
"""

from __future__ import annotations

import time

import fakeredis
import pytest
import redis

from maker_workers import keys
from maker_workers.celery_app import make_app
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.errors import Cancelled, ConfigError, StoreError
from orchestrator.cluster.embedded import Embedded
from orchestrator.engine.runner import CommittedStep, Runner, VotingConfig
from orchestrator.engine.store import Checkpoint, RunStore
from orchestrator.interfaces.api import progress

HANOI_3 = HanoiTask(3).definition()


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_a_resumed_run_must_be_the_same_task_with_the_same_k(fake: fakeredis.FakeRedis) -> None:
    RunStore(fake, "r").start(HANOI_3, {"k": 3})
    RunStore(fake, "r").start(HANOI_3, {"k": 3, "speculate": 4})  # other options may change
    with pytest.raises(ConfigError, match=r"hanoi with 3 disks.*not hanoi with 4 disks"):
        RunStore(fake, "r").start(HanoiTask(4).definition(), {"k": 3})
    with pytest.raises(ConfigError, match="resume it with --k 3"):
        RunStore(fake, "r").start(HANOI_3, {"k": 4})


def test_progress_reads_a_run_from_redis_alone(fake: fakeredis.FakeRedis) -> None:
    store = RunStore(fake, "r")
    store.start(HANOI_3, {"k": 3})
    fake.hset(keys.checkpoint("r"), mapping={"step": 4, "state": "[[3],[2],[1]]", "previous": "null"})
    fake.hset(keys.stats("r"), mapping={"samples": 14, "votes": 13, "red_flags": 1})
    now = progress(fake, "r")
    assert (now.task, now.steps_done, now.total_steps, now.samples, now.finished) == ("hanoi", 4, 7, 14, False)
    assert store.saved() == Checkpoint(step=4, state=[[3], [2], [1]], previous=None)
    store.finish("step 4 failed: cap")
    assert progress(fake, "r").failure == "step 4 failed: cap"
    store.start(HANOI_3, {"k": 3})  # resumed: it goes again
    assert not progress(fake, "r").finished


def test_a_commit_sent_twice_logs_the_step_once(client: redis.Redis) -> None:
    """What redis-py does when the reply to a commit is lost: it sends the same commit again."""
    store = RunStore(client, "r")
    first, second = keys.step("r", 0, "h0"), keys.step("r", 1, "h1")
    # An ensemble's votes by model: the winner's are credited to their models at commit, once.
    client.hset(first.voters, mapping={"sim:a [1,0,2]": 3, "sim:b [1,0,2]": 1, "sim:b [2,0,1]": 1})
    store.commit(0, [[3, 2], [], [1]], {"move": [1, 0, 2]}, first, "[1,0,2]")
    store.commit(0, [[3, 2], [], [1]], {"move": [1, 0, 2]}, first, "[1,0,2]")
    store.commit(1, [[3], [2], [1]], {"move": [2, 0, 1]}, second, "[2,0,1]")
    assert store.answers() == [{"move": [1, 0, 2]}, {"move": [2, 0, 1]}]
    assert store.saved() == Checkpoint(step=2, state=[[3], [2], [1]], previous={"move": [2, 0, 1]})
    assert store.stats() == {"model:sim:a:winning_votes": 3, "model:sim:b:winning_votes": 1}
    with pytest.raises(StoreError, match="checkpoint is at step 2, not 5"):
        store.commit(5, [], {}, first, "")


def test_a_cancelled_run_stops_within_seconds_and_can_be_resumed(cluster: Embedded) -> None:
    client = redis.Redis.from_url(cluster.redis_url)
    runner = Runner(client, make_app(cluster.redis_url), VotingConfig(wait_s=0.2), HanoiTask(12))

    def cancel_at_step_20(step: CommittedStep) -> None:
        if step.step == 20:
            RunStore(client, runner.run_id).cancel()

    started = time.monotonic()
    with pytest.raises(Cancelled):
        runner.run(cancel_at_step_20)
    assert time.monotonic() - started < 30
    saved = runner.store.saved()
    assert saved is not None and 20 < saved.step < 4095
    resumed = Runner(client, make_app(cluster.redis_url), VotingConfig(), HanoiTask(12), run_id=runner.run_id)
    assert resumed.start() == saved and resumed.store.stopped() is None  # a resumed run goes again


def test_a_committed_contest_keeps_only_its_decision(cluster: Embedded) -> None:
    """Redis holds what is live: a committed step's seen set, tally and payloads go at commit; its status lingers
    `linger_s`, so that a sample landing after the decision is recorded as late (its seen set then lingers as
    long); a dropped guess's keys expire as soon."""
    client = redis.Redis.from_url(cluster.redis_url)
    task = HanoiTask(5)
    runner = Runner(client, make_app(cluster.redis_url), VotingConfig(linger_s=30), task)
    steps: list[CommittedStep] = []
    runner.run(steps.append)
    previous = [None] + [step.answer for step in steps[:-1]]
    committed = [
        keys.step(runner.run_id, s.step, task.input_hash(s.state, s.step, p))
        for s, p in zip(steps, previous, strict=True)
    ]
    assert len(committed) == 31
    for contest in committed:
        assert client.hget(contest.status, "decided") == b"1" and 0 < client.ttl(contest.status) <= 30
        gone = set(contest.every()) - {contest.status, contest.seen}
        assert not client.exists(*gone)
    left = list(client.scan_iter(f"maker:{{{runner.run_id}}}:step:*"))  # dropped guesses' keys too
    assert left and all(0 < client.ttl(key) <= 30 for key in left)
