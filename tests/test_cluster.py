"""The distributed path with real parts: redis-server, sim-llm and Celery workers as processes."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator

import pytest
import redis

from maker_workers import keys
from maker_workers.celery_app import SAMPLE_TASK, make_app
from maker_workers.domains import hanoi
from maker_workers.errors import StepFailed
from maker_workers.sampling import SampleRequest
from maker_workers.simllm.model import SimConfig
from maker_workers.votes import Contest
from orchestrator.cluster.embedded import Embedded
from orchestrator.engine.runner import CommittedStep, Runner, VotingConfig
from orchestrator.reports.report import Scorer
from tests.conftest import OrchestratorDied, dies_after


@pytest.fixture
def cluster_client(cluster: Embedded) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(cluster.redis_url)
    yield client
    client.close()


def runner(cluster: Embedded, client: redis.Redis, disks: int = 5, **voting: float) -> Runner:
    task = hanoi.HanoiTask(disks)
    return Runner(client, make_app(cluster.redis_url), VotingConfig(**voting), task, health_check=cluster.check)


def test_solves_hanoi_through_the_cluster_and_checkpoints(cluster: Embedded, cluster_client: redis.Redis) -> None:
    engine, scorer = runner(cluster, cluster_client), Scorer(5)
    final = engine.run(scorer.observe)
    assert final == hanoi.goal_state(5)
    assert (scorer.steps, scorer.errors) == (31, 0)
    saved = cluster_client.hgetall(keys.checkpoint(engine.run_id))
    assert int(saved[b"step"]) == 31 and json.loads(saved[b"state"]) == hanoi.goal_state(5)
    assert [hanoi.move_of(a) for a in engine.store.answers()] == list(hanoi.optimal_moves(5))
    assert engine.store.stats()["decisions"] == 31


def test_a_redelivered_task_counts_once(cluster: Embedded, cluster_client: redis.Redis) -> None:
    run_id, state = uuid.uuid4().hex[:8], hanoi.initial_state(3)
    request = SampleRequest(
        run_id=run_id,
        step=0,
        input_hash=hanoi.input_hash(state, None),
        state=state,
        sample_id="twice",
        temperature=0.0,
        k=2,
    )
    cluster_client.hset(keys.meta(run_id), "task", json.dumps(hanoi.HanoiTask(3).definition()))
    broker = make_app(cluster.redis_url)
    for _ in range(2):  # what Celery does after a worker dies before acking
        broker.send_task(SAMPLE_TASK, args=[request.model_dump(mode="json")])
    stream = keys.events(run_id)
    seen: list[str] = []
    last = "0"
    while "duplicate" not in seen:
        for _, entries in cluster_client.xread({stream: last}, block=30_000):
            for entry_id, fields in entries:
                seen.append(fields[b"kind"].decode())
                last = entry_id
    assert seen.count("vote") == 1
    status = keys.step(run_id, 0, hanoi.input_hash(state, None))
    assert cluster_client.hvals(status.tally) == [b"1"]
    assert cluster_client.llen(keys.notify(run_id)) == 1


def test_a_step_that_cannot_reach_the_margin_fails_loudly(cluster: Embedded, cluster_client: redis.Redis) -> None:
    engine = runner(cluster, cluster_client, disks=3, k=3, max_samples=5)
    # an earlier orchestrator saw two votes for a rival: the right answer now needs 5 more, over the cap
    rival = Contest(run_id=engine.run_id, step=0, input_hash=hanoi.input_hash(hanoi.initial_state(3), None), k=3)
    for sample_id in ("r1", "r2"):
        engine.book.record(rival, sample_id, "vote", "rival")
    with pytest.raises(StepFailed, match="step 0 failed: 5 samples without a 3-vote margin"):
        engine.run()
    assert cluster_client.hget(keys.stats(engine.run_id), "decisions") is None  # nothing guessed
    assert cluster_client.hget(keys.stats(engine.run_id), "samples") == b"5"  # 2 rivals + 3: never past the cap
    assert engine.store.answers() == []


def test_a_run_resumes_from_redis_after_the_orchestrator_dies(cluster: Embedded, cluster_client: redis.Redis) -> None:
    first = runner(cluster, cluster_client)
    with pytest.raises(OrchestratorDied):
        first.run(dies_after(9))
    resumed: list[int] = []
    second = Runner(
        cluster_client, make_app(cluster.redis_url), VotingConfig(), hanoi.HanoiTask(5), run_id=first.run_id
    )
    final = second.run(lambda step: resumed.append(step.step))
    assert resumed == list(range(10, 31))
    assert final == hanoi.goal_state(5)
    assert [hanoi.move_of(a) for a in second.store.answers()] == list(hanoi.optimal_moves(5))


def test_a_run_survives_a_worker_killed_mid_run() -> None:
    with Embedded(workers=2, concurrency=2, sim=SimConfig(latency_ms=5, seed=1)) as cluster:
        client = redis.Redis.from_url(cluster.redis_url)
        victim = next(p for p in cluster.processes if p.name == "worker-0")

        def kill_at_step_5(step: CommittedStep) -> None:
            if step.step == 5:
                os.kill(victim.popen.pid, signal.SIGKILL)

        engine = Runner(
            client, make_app(cluster.redis_url), VotingConfig(sample_timeout_s=1.0, wait_s=0.5), hanoi.HanoiTask(5)
        )
        scorer = Scorer(5)
        engine.run(lambda step: (kill_at_step_5(step), scorer.observe(step)))
        assert victim.popen.wait(10) == -signal.SIGKILL
        assert (scorer.steps, scorer.errors, scorer.solved) == (31, 0, True)


def test_speculation_commits_only_steps_decided_on_their_exact_input() -> None:
    """At a 30% error rate many guesses are wrong; each committed step must still have been decided
    ahead-by-k in the contest of exactly its committed input, and wrong guesses never count."""
    sim = SimConfig(error_rate=0.3, latency_ms=2, seed=9)
    with Embedded(workers=2, concurrency=4, sim=sim) as cluster:
        client = redis.Redis.from_url(cluster.redis_url)
        voting = VotingConfig(k=3, speculate=3)
        engine = Runner(client, make_app(cluster.redis_url), voting, hanoi.HanoiTask(5), health_check=cluster.check)
        committed: list[CommittedStep] = []
        engine.run(committed.append)
        state, previous = hanoi.initial_state(5), None
        for step in committed:
            status = client.hgetall(keys.step(engine.run_id, step.step, hanoi.input_hash(state, previous)).status)
            assert status[b"decided"] == b"1"
            move = hanoi.move_of(step.answer)
            assert status[b"winner"].decode() == hanoi.candidate(move, step.next_state)
            assert int(status[b"leader_votes"]) >= 3 + int(status[b"runner_up_votes"])
            state, previous = step.next_state, move
        contests = list(client.scan_iter(match=keys.step_status_pattern(engine.run_id)))
        assert len(committed) == 31
        assert len(contests) > len(committed)  # some guesses were voted on and dropped


def test_a_run_resumes_after_the_orchestrator_and_every_worker_die() -> None:
    with Embedded(workers=2, concurrency=2, sim=SimConfig(seed=3)) as cluster:
        client = redis.Redis.from_url(cluster.redis_url)
        first = Runner(client, make_app(cluster.redis_url), VotingConfig(k=3, speculate=2), hanoi.HanoiTask(5))
        old_workers = [p for p in cluster.processes if p.name.startswith("worker-")]

        def everything_dies_at_step_7(step: CommittedStep) -> None:
            if step.step == 7:
                for worker in old_workers:
                    os.kill(worker.popen.pid, signal.SIGKILL)
                raise OrchestratorDied

        with pytest.raises(OrchestratorDied):
            first.run(everything_dies_at_step_7)
        for worker in old_workers:
            assert worker.popen.wait(10) == -signal.SIGKILL
            cluster.processes.remove(worker)
        cluster.start_workers(2)  # new machines, same Redis: nothing but Redis carries the run over
        second = Runner(
            client,
            make_app(cluster.redis_url),
            VotingConfig(k=3, sample_timeout_s=2, wait_s=0.5),
            hanoi.HanoiTask(5),
            run_id=first.run_id,
            health_check=cluster.check,
        )
        resumed: list[int] = []
        assert second.run(lambda step: resumed.append(step.step)) == hanoi.goal_state(5)
        assert resumed == list(range(8, 31))
        assert [hanoi.move_of(a) for a in second.store.answers()] == list(hanoi.optimal_moves(5))


def test_silence_from_every_worker_is_reported(redis_url: str) -> None:
    """A cluster with no workers: the user hears about it instead of watching a frozen bar."""

    class Reported(Exception):
        pass

    def on_stall(silent: float) -> None:
        raise Reported(silent)

    runner = Runner(
        redis.Redis.from_url(redis_url),
        make_app(redis_url),
        VotingConfig(wait_s=0.1, stall_warning_s=0.3),
        hanoi.HanoiTask(3),
        on_stall=on_stall,
    )
    with pytest.raises(Reported) as reported:
        runner.run()
    assert reported.value.args[0] >= 0.3


def test_a_decision_whose_notice_was_lost_is_read_back_not_waited_for(redis_url: str) -> None:
    """The contest is decided in Redis but no notice ever comes (lost reply, expired keys): a re-read finds it."""
    import threading

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    task = hanoi.HanoiTask(1)
    engine = Runner(client, make_app(redis_url), VotingConfig(k=1, wait_s=0.2, drain_s=0), task)
    finished: list[object] = []
    thread = threading.Thread(target=lambda: finished.append(engine.run()), daemon=True)
    thread.start()
    while not client.llen("maker"):  # the sample is queued (no worker will take it): the contest is open
        client.blpop(["never"], timeout=0.05)
    winner = hanoi.candidate((1, 0, 2), [[], [], [1]])
    status = keys.step(engine.run_id, 0, task.input_hash(task.initial_state(), 0, None)).status
    client.hset(status, mapping={"decided": 1, "winner": winner, "leader": winner, "leader_votes": 1, "samples": 1})
    thread.join(30)
    assert finished == [[[], [], [1]]]
    assert engine.store.answers() == [{"move": [1, 0, 2], "next_state": [[], [], [1]]}]
