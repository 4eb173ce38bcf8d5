"""`maker audit`: a run checked from its Redis alone, clean runs pass and every kind of tampering is named.

Runs go through real Celery workers and the simulated LLM (wrong 30% of the time, so speculative guesses
lose and their votes must be told apart from the committed ones); the audit runs as the `maker` command.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import redis

from maker_workers import keys
from maker_workers.domains.base import canonical
from maker_workers.simllm.model import SimConfig
from orchestrator import api
from orchestrator.cluster.connect import ClusterOptions
from orchestrator.cluster.embedded import Embedded
from orchestrator.engine.runner import VotingConfig
from tests.conftest import run_cli

Fields = dict[bytes, bytes]


@pytest.fixture(scope="module")
def noisy() -> Iterator[Embedded]:
    """A cluster whose simulated model is wrong 30% of the time: guesses often lose."""
    with Embedded(workers=2, concurrency=4, sim=SimConfig(seed=7, error_rate=0.3)) as running:
        yield running


@pytest.fixture
def client(noisy: Embedded) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(noisy.redis_url)
    yield client
    client.close()


def solved(noisy: Embedded, disks: int = 4, speculate: int = 0) -> str:
    """A finished run's id. At this error rate some runs commit wrong moves: the audit checks how each step
    was decided, not whether the model was right (only the scorer knows that)."""
    voting = VotingConfig(speculate=speculate)
    report = api.run_hanoi(disks, voting=voting, cluster=ClusterOptions(redis_url=noisy.redis_url))
    assert report.failure is None and report.steps == 2**disks - 1
    return report.run_id


def audited(noisy: Embedded, run_id: str, *flags: str) -> tuple[int, str]:
    result = run_cli("audit", run_id, "--redis-url", noisy.redis_url, *flags, timeout=60)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout + result.stderr


def audit_json(noisy: Embedded, run_id: str) -> dict:
    code, out = audited(noisy, run_id, "--json")
    report = json.loads(out.splitlines()[-1])
    assert code == (0 if report["ok"] else 1)
    return report


def rewrite_events(client: redis.Redis, run_id: str, change: Callable[[Fields], Fields]) -> None:
    """The run's stream with one entry changed in place: same ids, same order, nothing added or deleted."""
    stream = keys.events(run_id)
    entries = client.xrange(stream)
    client.delete(stream)
    for entry_id, fields in entries:
        client.xadd(stream, change(fields), id=entry_id)


def committed_decisions(client: redis.Redis, run_id: str) -> list[Fields]:
    answers = [canonical(json.loads(a)) for a in client.lrange(keys.answers(run_id), 0, -1)]
    decided = [f for _, f in client.xrange(keys.events(run_id)) if f[b"kind"] == b"decided"]
    return [f for f in decided if f[b"candidate"].decode() in answers]


def some_vote(client: redis.Redis, run_id: str) -> Fields:
    return next(f for _, f in client.xrange(keys.events(run_id)) if f[b"kind"] == b"vote")


def test_a_clean_run_audits_clean_and_says_what_it_checked(noisy: Embedded) -> None:
    run_id = solved(noisy)
    code, out = audited(noisy, run_id)
    assert code == 0, out
    for check in ("stream", "answers", "samples", "margin", "votes", "status"):
        assert f"ok        {check}: " in out
    assert "15 of 15 committed steps recounted" in out and out.strip().endswith("audit: clean")
    report = audit_json(noisy, run_id)
    assert (report["ok"], report["steps"], report["steps_recounted"], report["trimmed"]) == (True, 15, 15, False)
    assert report["votes_committed"] >= 15 * 3


def test_a_run_with_speculation_audits_clean_and_counts_the_votes_of_lost_guesses_apart(noisy: Embedded) -> None:
    report = audit_json(noisy, solved(noisy, disks=5, speculate=3))
    assert report["ok"], report
    assert report["steps_recounted"] == 31
    assert report["votes_dropped"] > 0  # guesses built on a leader that then lost: never counted for a commit


def test_a_forged_vote_reusing_a_sample_id_is_named(noisy: Embedded, client: redis.Redis) -> None:
    run_id = solved(noisy, disks=3)
    reused = some_vote(client, run_id)
    forged = {**reused, b"input": b"0123456789abcdef", b"candidate": b"forged"}  # a contest never committed
    client.xadd(keys.events(run_id), forged)
    code, out = audited(noisy, run_id)
    assert code == 1
    assert "VIOLATION samples" in out and reused[b"sample"].decode() in out


def test_an_extra_answer_on_the_log_is_a_violation(noisy: Embedded, client: redis.Redis) -> None:
    run_id = solved(noisy, disks=3)
    client.rpush(keys.answers(run_id), client.lindex(keys.answers(run_id), -1))
    code, out = audited(noisy, run_id)
    assert code == 1
    assert "VIOLATION answers" in out and "the answer log holds 8 answers, the checkpoint says 7" in out


def test_an_answer_log_entry_that_is_no_answer_is_a_violation_not_a_crash(noisy: Embedded, client: redis.Redis) -> None:
    run_id = solved(noisy, disks=3)
    client.lset(keys.answers(run_id), 3, "not an answer")
    code, out = audited(noisy, run_id)
    assert code == 1 and "VIOLATION answers" in out and "step 3's logged answer b'not an answer'" in out


def test_a_changed_decision_is_a_violation(noisy: Embedded, client: redis.Redis) -> None:
    run_id = solved(noisy, disks=3)
    target = committed_decisions(client, run_id)[2]
    other = b'{"move":[1,0,1],"next_state":"forged"}'
    rewrite_events(client, run_id, lambda f: {**f, b"candidate": other} if f == target else f)
    code, out = audited(noisy, run_id)
    assert code == 1
    assert "VIOLATION margin" in out and "decided candidate" in out and other.decode() in out


def test_a_vote_counted_after_its_decision_is_a_violation(noisy: Embedded, client: redis.Redis) -> None:
    run_id = solved(noisy, disks=3)
    decision = committed_decisions(client, run_id)[0]
    late = {b"step": decision[b"step"], b"input": decision[b"input"], b"sample": b"after-the-fact", b"kind": b"vote"}
    client.xadd(keys.events(run_id), {**late, b"candidate": decision[b"candidate"]})
    code, out = audited(noisy, run_id)
    assert code == 1
    assert "VIOLATION votes" in out and "'after-the-fact' was counted" in out


def test_a_status_hash_that_disagrees_is_a_violation(noisy: Embedded, client: redis.Redis) -> None:
    run_id = solved(noisy, disks=3)
    decision = committed_decisions(client, run_id)[1]
    status = keys.step(run_id, int(decision[b"step"]), decision[b"input"].decode()).status
    client.hincrby(status, "runner_up_votes", 1)
    code, out = audited(noisy, run_id)
    assert code == 1 and "VIOLATION status" in out


def test_a_trimmed_stream_is_checked_as_far_as_it_goes(noisy: Embedded, client: redis.Redis) -> None:
    run_id = solved(noisy, disks=5, speculate=2)
    stream = keys.events(run_id)
    client.xtrim(stream, maxlen=client.xlen(stream) // 2, approximate=False)
    report = audit_json(noisy, run_id)
    assert report["ok"] and report["trimmed"]
    assert 0 < report["steps_recounted"] < 31 and report["steps_status_only"] == 31 - report["steps_recounted"]

    for status in client.scan_iter(match=keys.step_status_pattern(run_id)):
        client.delete(status)  # as if their TTL had run out
    code, out = audited(noisy, run_id)
    assert code == 0, out
    assert f"{31 - report['steps_recounted']} could not be checked" in out


def test_a_hole_in_the_middle_of_the_stream_is_a_violation(noisy: Embedded, client: redis.Redis) -> None:
    run_id = solved(noisy, disks=3)
    stream = keys.events(run_id)
    middle = client.xrange(stream)[5][0]
    client.xdel(stream, middle)
    code, out = audited(noisy, run_id)
    assert code == 1 and "deleted from the middle of the stream" in out


def test_an_unknown_run_or_a_bad_run_id_is_bad_input(noisy: Embedded) -> None:
    code, out = audited(noisy, "no-such-run")
    assert code == 2 and f"no run no-such-run in the Redis at {noisy.redis_url}" in out
    code, out = audited(noisy, "a{b}:c")
    assert code == 2 and "is not valid" in out
    missing = run_cli("audit", "no-such-run", timeout=60)
    assert missing.returncode == 2 and "--redis-url" in missing.stderr
