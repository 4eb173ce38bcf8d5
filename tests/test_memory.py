"""Nothing the orchestrator or Redis holds grows with the number of steps, beyond the answer log (the run's
result) and the events stream (capped): a million-step run needs the memory of a thousand-step one."""

from __future__ import annotations

import sys

import redis

from maker_workers import keys
from maker_workers.celery_app import make_app
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.simllm.model import SimConfig
from orchestrator.cluster.embedded import Embedded
from orchestrator.engine.runner import CommittedStep, Runner, VotingConfig
from orchestrator.reports.report import Scorer

DISKS = 14
FIRST = 2_000  # the step the "start" figures are read at, once every pool and cache has filled


def _redis_live(client: redis.Redis, run_id: str) -> int:
    """Redis's used memory, less the answer log and the events stream."""
    logs = sum(client.memory_usage(key, samples=0) or 0 for key in (keys.answers(run_id), keys.events(run_id)))
    return client.info("memory")["used_memory"] - logs


def test_fourteen_disks_end_with_the_memory_they_started_with() -> None:
    # The sim inside the workers (no HTTP: this is about memory, and it makes the 16,383 steps quicker).
    with Embedded(workers=4, concurrency=2, sim=SimConfig(seed=3), sim_inprocess=True) as cluster:
        client = redis.Redis.from_url(cluster.redis_url)
        # A short linger, so that what lingers at the end is a few seconds' steps, not the whole run's.
        runner = Runner(
            client, make_app(cluster.redis_url), VotingConfig(linger_s=2), HanoiTask(DISKS), health_check=cluster.check
        )
        scorer = Scorer(DISKS)
        seen: dict[str, tuple[int, int, int]] = {}

        def on_commit(step: CommittedStep) -> None:
            scorer.observe(step)
            if step.step in (FIRST, 2**DISKS - 2):
                at = "start" if step.step == FIRST else "end"
                seen[at] = (sys.getallocatedblocks(), _redis_live(client, runner.run_id), client.dbsize())

        runner.run(on_commit)

    assert scorer.solved and scorer.errors == 0
    (blocks_start, redis_start, keys_start), (blocks_end, redis_end, keys_end) = seen["start"], seen["end"]
    steps = 2**DISKS - 2 - FIRST
    # A dict entry kept per sample would be several blocks for each of the ~45,000 samples since the start.
    assert blocks_end - blocks_start < 10_000, f"the orchestrator grew by {blocks_end - blocks_start} blocks"
    assert len(runner._outstanding) < 500 and len(runner._dropped) <= 1024
    # The live contests and a couple of seconds of decided ones, not 14,000 steps' worth (~2.5 kB each before).
    assert redis_end - redis_start < 1_000_000, f"Redis grew by {redis_end - redis_start} bytes over {steps} steps"
    assert keys_end < 3_000 and keys_end - keys_start < 2_000, f"{keys_start} keys at the start, {keys_end} at the end"
