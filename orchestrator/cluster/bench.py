"""`maker bench`: what the engine costs per sample, next to a bare no-op Celery task on the same cluster.

Both are measured in one run, on the same broker and the same workers, so the ratio holds on a noisy
machine even when the absolute figures do not.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
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
from orchestrator.cluster.connect import ClusterOptions, cluster_for_run
from orchestrator.cluster.embedded import Embedded
from orchestrator.engine.runner import Runner, VotingConfig
from orchestrator.reports.report import Scorer, wasted_samples

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


class Phase(BaseModel):
    """One cluster's figures: the engine and the bare no-op task, measured on the same broker and workers."""

    sim: str  # how the workers reached the simulated model: "in-process", "http", or "the cluster's own"
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
    wasted_samples: int
    engine_cpu_ms_per_sample: dict[str, float]
    noop_cpu_ms_per_task: dict[str, float]


class BenchResult(Phase):
    """The headline figures are the engine's with the sim in process (the model's stand-in costs the engine
    nothing, as a remote model would not); `http` is the same run with the sim over HTTP, for comparison."""

    http: Phase | None = None


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


def _phase(options: ClusterOptions, sim: str, disks: int, voting: VotingConfig, noop_tasks: int) -> Phase:
    with cluster_for_run(options) as cluster:
        clock = CpuClock(cluster.embedded)
        client, broker = cluster.client, cluster.broker
        _noop_rate(client, broker, 1, 200)  # warm up connections and workers
        before = clock.read()
        noop_rate = _noop_rate(client, broker, 1, noop_tasks)
        noop_cpu = clock.per_item_ms(before, noop_tasks)

        runner = Runner(client, broker, voting, HanoiTask(disks), health_check=cluster.health_check)
        scorer = Scorer(disks)
        before = clock.read()
        started = time.perf_counter()
        runner.run(scorer.observe)
        wall = time.perf_counter() - started
        stats = runner.store.stats()
        samples = stats["samples"]
        engine_cpu = clock.per_item_ms(before, samples)
        lockstep_rate = _noop_rate(client, broker, min(scorer.steps, 500), voting.k)
    return Phase(
        sim=sim,
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
        wasted_samples=wasted_samples(stats),
        engine_cpu_ms_per_sample=engine_cpu,
        noop_cpu_ms_per_task=noop_cpu,
    )


def run_bench(
    disks: int,
    k: int,
    workers: int,
    concurrency: int,
    noop_tasks: int,
    redis_url: str | None,
    speculate: int | None = None,
    console: Console | None = None,
    http: bool = True,
) -> BenchResult:
    """`http`: also run the engine with the sim over HTTP (the embedded cluster only), printed beside."""
    console = console or Console()
    voting = VotingConfig(k=k) if speculate is None else VotingConfig(k=k, speculate=speculate)
    options = ClusterOptions(
        redis_url=redis_url, workers=workers, concurrency=concurrency, sim=SimConfig(latency_ms=0.0)
    )
    if redis_url is not None:
        result = BenchResult(**_phase(options, "the cluster's own", disks, voting, noop_tasks).model_dump())
    else:
        inprocess = options.model_copy(update={"sim_inprocess": True})
        result = BenchResult(**_phase(inprocess, "in-process", disks, voting, noop_tasks).model_dump())
        if http:
            result.http = _phase(options, "http", disks, voting, noop_tasks)
    _print(console, result, disks, voting)
    return result


def _print(console: Console, result: BenchResult, disks: int, voting: VotingConfig) -> None:
    phases = [result] + ([result.http] if result.http else [])
    table = Table(title=f"maker bench: {disks} disks, k={voting.k}, speculate={voting.speculate}, zero model latency")
    table.add_column("measure")
    for phase in phases:
        table.add_column(f"sim {phase.sim}", justify="right")

    def row(name: str, show: Callable[[Phase], str]) -> None:
        table.add_row(name, *(show(phase) for phase in phases))

    row("steps (errors)", lambda p: f"{p.steps} ({p.errors})")
    row("engine: samples/s", lambda p: f"{p.engine_samples_per_s:.0f}")
    row("engine: per-step overhead", lambda p: f"{p.step_overhead_ms:.2f} ms")
    row("engine: wasted samples (speculation)", lambda p: f"{p.wasted_samples}")
    row("bare no-op task, bulk: tasks/s", lambda p: f"{p.noop_tasks_per_s:.0f}")
    row(f"bare no-op task, {voting.k} at a time: tasks/s", lambda p: f"{p.noop_lockstep_tasks_per_s:.0f}")
    row("engine samples/s ÷ bulk no-op tasks/s", lambda p: f"{p.ratio:.2f}")
    for name in {name: None for phase in phases for name in phase.engine_cpu_ms_per_sample}:
        row(
            f"CPU per sample / per no-op task: {name}",
            lambda p, name=name: (
                f"{p.engine_cpu_ms_per_sample.get(name, 0.0):.2f} / {p.noop_cpu_ms_per_task.get(name, 0.0):.2f} ms"
            ),
        )
    console.print(table)
