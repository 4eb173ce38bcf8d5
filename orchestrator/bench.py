"""`maker bench`: what the engine costs per sample, next to a bare no-op Celery task on the same cluster.

Both are measured in one run, on the same broker and the same workers, so the ratio holds on a noisy
machine even when the absolute figures do not.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import redis
from celery import Celery
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from maker_workers import keys
from maker_workers.celery_app import NOOP_TASK
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.simllm.model import SimConfig
from orchestrator.cluster import ClusterOptions, cluster_for_run
from orchestrator.embedded import Embedded
from orchestrator.report import Scorer
from orchestrator.runner import Runner, VotingConfig

_TICK = os.sysconf("SC_CLK_TCK")


class CpuClock:
    """CPU seconds used so far by this process and by each embedded part (from /proc; Linux only)."""

    def __init__(self, cluster: Embedded | None) -> None:
        self._pids = {p.name: p.popen.pid for p in cluster.processes} if cluster else {}

    def read(self) -> dict[str, float]:
        used = {"orchestrator": time.process_time()}
        for name, pid in self._pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[name.split("-")[0]] = used.get(name.split("-")[0], 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
        return used

    def per_item_ms(self, before: dict[str, float], items: int) -> dict[str, float]:
        after = self.read()
        return {name: round(1000 * (after[name] - before.get(name, 0.0)) / items, 3) for name in after}


class BenchResult(BaseModel):
    steps: int
    errors: int
    samples: int
    engine_wall_s: float
    engine_samples_per_s: float
    step_overhead_ms: float
    noop_tasks: int
    noop_tasks_per_s: float
    noop_lockstep_tasks_per_s: float
    ratio: float
    engine_cpu_ms_per_sample: dict[str, float]
    noop_cpu_ms_per_task: dict[str, float]


def _noop_rate(client: redis.Redis, broker: Celery, rounds: int, batch: int) -> float:
    """No-op tasks/s when `batch` tasks are sent, all awaited, then the next batch.

    One round of a large batch is the cluster's ceiling; many rounds of k are the engine's shape.
    """
    done = keys.bench_done(uuid.uuid4().hex[:8])
    started = time.perf_counter()
    for _ in range(rounds):
        for _ in range(batch):
            broker.send_task(NOOP_TASK, args=[done])
        for _ in range(batch):
            client.blpop([done], timeout=60)
    elapsed = time.perf_counter() - started
    client.delete(done)
    return rounds * batch / elapsed


def run_bench(
    disks: int,
    k: int,
    workers: int,
    concurrency: int,
    noop_tasks: int,
    redis_url: str | None,
    speculate: int = 0,
    console: Console | None = None,
) -> BenchResult:
    console = console or Console()
    options = ClusterOptions(
        redis_url=redis_url, workers=workers, concurrency=concurrency, sim=SimConfig(latency_ms=0.0)
    )
    with cluster_for_run(options) as cluster:
        clock = CpuClock(cluster.embedded)
        client, broker = cluster.client, cluster.broker
        _noop_rate(client, broker, 1, 200)  # warm up connections and workers
        before = clock.read()
        noop_rate = _noop_rate(client, broker, 1, noop_tasks)
        noop_cpu = clock.per_item_ms(before, noop_tasks)

        voting = VotingConfig(k=k, speculate=speculate)
        runner = Runner(client, broker, voting, HanoiTask(disks), health_check=cluster.health_check)
        scorer = Scorer(disks)
        before = clock.read()
        started = time.perf_counter()
        runner.run(scorer.observe)
        wall = time.perf_counter() - started
        samples = runner.store.stats()["samples"]
        engine_cpu = clock.per_item_ms(before, samples)
        lockstep_rate = _noop_rate(client, broker, min(scorer.steps, 500), k)

    result = BenchResult(
        steps=scorer.steps,
        errors=scorer.errors,
        samples=samples,
        engine_wall_s=round(wall, 3),
        engine_samples_per_s=round(samples / wall, 1),
        step_overhead_ms=round(1000 * wall / scorer.steps, 3),
        noop_tasks=noop_tasks,
        noop_tasks_per_s=round(noop_rate, 1),
        noop_lockstep_tasks_per_s=round(lockstep_rate, 1),
        ratio=round(samples / wall / noop_rate, 3),
        engine_cpu_ms_per_sample=engine_cpu,
        noop_cpu_ms_per_task=noop_cpu,
    )
    table = Table(title=f"maker bench: {disks} disks, k={k}, speculate={speculate}, zero simulated latency")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("steps (errors)", f"{result.steps} ({result.errors})")
    table.add_row("engine: samples/s", f"{result.engine_samples_per_s:.0f}")
    table.add_row("engine: per-step overhead", f"{result.step_overhead_ms:.2f} ms")
    table.add_row("bare no-op task, bulk: tasks/s", f"{result.noop_tasks_per_s:.0f}")
    table.add_row(f"bare no-op task, {k} at a time: tasks/s", f"{result.noop_lockstep_tasks_per_s:.0f}")
    table.add_row("engine samples/s ÷ bulk no-op tasks/s", f"{result.ratio:.2f}")
    for name, ms in result.engine_cpu_ms_per_sample.items():
        table.add_row(
            f"CPU per sample / per no-op task: {name}",
            f"{ms:.2f} / {result.noop_cpu_ms_per_task.get(name, 0.0):.2f} ms",
        )
    console.print(table)
    print(result.model_dump_json(), flush=True)  # one line, unwrapped, for scripts
    return result
