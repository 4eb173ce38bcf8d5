"""Votes on meaning end to end: the shipped free-text example through `maker run` on the embedded default,
and racing Celery workers on a cluster whose simulated model gives deceptively close wrong answers."""

from __future__ import annotations

import itertools
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from maker_workers import keys
from maker_workers.celery_app import make_app
from maker_workers.domains.answers import DEFAULT_THRESHOLD
from maker_workers.domains.spec import SpecTask, spec_from_data
from maker_workers.simllm.model import SimConfig
from orchestrator.cluster.embedded import Embedded
from orchestrator.engine.runner import CommittedStep, Runner, VotingConfig
from orchestrator.reports.phrasings import phrasings
from tests.conftest import ROOT, run_cli

EXAMPLE = ROOT / "examples" / "triage.yaml"
QUEUES = ["billing", "account", "shipping", "outage", "security", "billing"]


def test_the_free_text_example_reaches_its_known_result_by_meaning() -> None:
    done = run_cli("run", str(EXAMPLE), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["done"] and report["final_state"]["queues"] == QUEUES
    assert report["provider_errors"] == 0 and report["steps"] == 6
    winners = [candidates[0] for candidates in report["candidates"].values()]
    assert len(winners) == 6 and all(len(w["members"]) >= 2 for w in winners)  # every winner was phrased several ways
    assert report["embedding_tokens"] > 0 and report["embedding_cost_usd"] == 0.0  # the sim bills nothing


def test_the_same_example_matched_exactly_is_stopped_early_since_no_phrasing_repeats(tmp_path: Path) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["answer"] = {k: v for k, v in spec["answer"].items() if k not in ("match", "embeddings", "exact_fields")}
    exact = tmp_path / "triage-exact.yaml"
    exact.write_text(yaml.safe_dump(spec))
    done = run_cli("run", str(exact), "--json", "--max-samples", "200")
    assert done.returncode == 1
    report = json.loads(done.stdout.splitlines()[-1])
    # Every phrasing its own candidate: no answer nears half the votes, so the step stops after tens of samples
    # (not at the cap of 200), saying no k helps.
    assert report["steps"] == 0 and "do not repeat, so no k margin forms" in report["failure"]
    votes = re.search(r"in the step's (\d+) votes", report["failure"])
    assert votes is not None and int(votes.group(1)) < 45  # the step's own votes: tens, not the cap


def cosine(a: bytes, b: bytes) -> float:
    return sum(
        x * y for x, y in zip(struct.unpack(f"<{len(a) // 4}f", a), struct.unpack(f"<{len(b) // 4}f", b), strict=True)
    )


@pytest.fixture(scope="module")
def deceptive() -> Iterator[Embedded]:
    """Wrong answers give the right reason under a wrong queue: close in meaning, told apart by the queue alone."""
    sim = SimConfig(deceptive=True, error_rate=0.3, malformed_rate=0.0, too_long_rate=0.0, seed=5)
    with Embedded(workers=2, concurrency=4, sim=sim) as running:
        yield running


def test_racing_workers_never_split_one_meaning_and_never_merge_two_queues(deceptive: Embedded) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text()) | {"done": {"steps": 2}}
    task = SpecTask(spec_from_data(spec))
    client = redis.Redis.from_url(deceptive.redis_url)
    voting = VotingConfig(k=6, max_samples=80, keep_tallies=True)  # k samples race from the start of each step
    runner = Runner(client, make_app(deceptive.redis_url), voting, task, health_check=deceptive.check)
    committed: list[CommittedStep] = []
    final = runner.run(committed.append)
    assert final["queues"] == QUEUES[:2]

    previous = [None] + [step.answer for step in committed[:-1]]
    for step, before in zip(committed, previous, strict=True):
        # The committed input's contest (a dropped guess of the same step may have vectors of its own).
        contest = keys.step(runner.run_id, step.step, task.input_hash(step.state, step.step, before)).vectors
        stored = client.hgetall(contest)  # representatives, and members under candidate NUL answer
        candidates = [value.split(b"\n", 1) for key, value in stored.items() if b"\0" not in key]  # [group, vector]
        assert len(candidates) >= 2  # the wrong queues opened candidates of their own
        for (group_a, a), (group_b, b) in itertools.combinations(candidates, 2):
            if group_a == group_b:
                assert cosine(a, b) < DEFAULT_THRESHOLD
    for candidates in phrasings(client, runner.run_id).values():
        for candidate in candidates:
            queue = json.loads(candidate.representative)["queue"]
            assert {json.loads(member)["queue"] for member in candidate.members} == {queue}

    stats = runner.store.stats()
    sim_stats = httpx.get(deceptive.sim_url.removesuffix("/v1") + "/stats").json()["by_model"]["sim-embed"]
    assert stats["embedding_tokens"] == sim_stats["input_tokens"] and stats["embedding_calls"] == sim_stats["requests"]
