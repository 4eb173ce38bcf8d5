"""Scale-out: samples/s with 1, 2, 4 and 8 worker processes at a fixed model latency, against what one Redis serves.

    .venv/bin/python benchmarks/scale_out.py

Part 1, for each worker count W: the embedded cluster with W worker processes of `--concurrency` threads and the
simulated model answering in exactly `--latency-ms` (a floor, no random tail). The same job for every W: `--runs`
Hanoi runs at once (threads of `--orchestrators` processes), each started again when it ends, so that many more
samples are in flight than the workers have threads. samples/s is read from the runs' counters over a window of
`--measure-s` after `--warmup-s`; then no new run starts, the ones going finish, and each must be solved with zero
errors. The bound is W x threads / latency; where samples/s falls short of it, the CPU rows say why.

Part 2, the Redis side: a redis-server of its own, and `--bound-clients` processes sending the real vote script
(lua/record_sample.lua through VoteBook) in pipelines for `--bound-s`, contests of k=3 that decide and move on to
the next step of a 20-disk Hanoi run; then the broker's share of a sample (LPUSH and BRPOP, all kombu sends Redis
per task) with the bytes of a real task message. redis-server's CPU during each says whether Redis was the limit
(one core) or the clients were; where it was not, calls/s at a full core is projected from Redis's CPU per call.

Prints a table per part, what follows from them, and one JSON line. Not part of the test run: about 3 minutes here.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import redis
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from maker_workers import keys
from maker_workers.celery_app import QUEUE, make_app
from maker_workers.connections import connect
from maker_workers.domains import hanoi
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.sampling import SampleRequest
from maker_workers.simllm.model import SimConfig
from maker_workers.votes import Contest, VoteBook
from orchestrator.cluster.embedded import Embedded, free_port, start_redis
from orchestrator.engine.publisher import Publisher
from orchestrator.engine.runner import Runner, VotingConfig
from orchestrator.reports.report import Scorer

_TICK = os.sysconf("SC_CLK_TCK")


# --- CPU, from /proc (Linux) --------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """CPU seconds a process (all its threads) has used; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (all cores): what the others' load is read from."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


class CpuWindow:
    """Each group of processes' CPU over a window, as percent of one core."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        used = {name: sum(cpu_s(pid) for pid in pids) for name, pids in self.groups.items()}
        return used | {"machine": machine_busy_s(), "wall": time.monotonic()}

    def percent(self) -> dict[str, float]:
        end = self._read()
        wall = end["wall"] - self._start["wall"]
        used = {name: round(100 * (end[name] - self._start[name]) / wall, 1) for name in self.groups}
        machine = round(100 * (end["machine"] - self._start["machine"]) / wall, 1)
        return used | {"machine": machine, "others": round(max(0.0, machine - sum(used.values())), 1)}


# --- part 1: the same job on W workers ----------------------------------------------------------------------


class RunResult(BaseModel):
    run_id: str
    steps: int = 0
    solved: bool = False
    errors: int = 0
    samples: int = 0
    failure: str | None = None


def drive_runs(redis_url: str, threads: int, disks: int, voting: VotingConfig, stop: Event, out: Queue) -> None:
    """One orchestrator process: `threads` runs at once, each started again when it ends, until `stop`.

    Says each run id as it starts (the window's sample count reads their counters), then every run's result."""
    results: list[RunResult] = []

    def loop() -> None:
        client = connect(redis_url)
        broker = make_app(redis_url)
        while not stop.is_set():
            runner = Runner(client, broker, voting, HanoiTask(disks))
            out.put(("run", runner.run_id))
            scorer = Scorer(disks)
            result = RunResult(run_id=runner.run_id)
            try:
                runner.run(scorer.observe)
            except Exception as exc:  # counted and shown: a benchmark that hid a failed run would mislead
                result.failure = f"{type(exc).__name__}: {exc}"
            result.steps, result.solved, result.errors = scorer.steps, scorer.solved, scorer.errors
            result.samples = runner.store.stats().get("samples", 0)
            results.append(result)
        client.close()

    running = [threading.Thread(target=loop) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    out.put(("done", [r.model_dump() for r in results]))


class Point(BaseModel):
    """One worker count's figures. CPU is percent of one core over the window (the machine has 2 cores: 200)."""

    workers: int
    threads: int
    bound_samples_per_s: float  # threads / latency
    samples_per_s: float
    per_worker_samples_per_s: float
    utilisation: float  # samples/s / bound
    mean_queued: float  # tasks waiting in the broker's list, sampled each second of the window
    cpu_percent: dict[str, float]
    redis_cpu_ms_per_sample: float
    redis_commands_per_sample: dict[str, float]  # INFO commandstats: calls per sample, by command
    redis_command_us_per_sample: dict[str, float]  # and Redis's time in them, microseconds per sample
    runs: int
    solved: int
    errors: int
    failures: list[str]
    samples: int  # the whole job's, from every run's counters
    samples_per_step: float
    job_s: float
    limit: str


def _window_samples(client: redis.Redis, run_ids: list[str]) -> int:
    with client.pipeline(transaction=False) as pipe:
        for run_id in run_ids:
            pipe.hget(keys.stats(run_id), "samples")
        return sum(int(n or 0) for n in pipe.execute())


def _commandstats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    return {name.removeprefix("cmdstat_"): (s["calls"], s["usec"]) for name, s in client.info("commandstats").items()}


def _limit(point: Point, cores: int) -> str:
    """What held samples/s where it is."""
    cpu = point.cpu_percent
    if point.utilisation >= 0.85:
        return "worker threads (all waiting on the model)"
    if cpu["redis"] >= 90:
        return "Redis (one core)"
    if cpu["machine"] >= 90 * cores:
        return f"CPU: all {cores} cores busy ({cpu['others']:.0f}% of a core not ours)"
    if point.mean_queued < 1:
        return "too few samples in flight: raise --runs"
    return "neither threads nor CPU: see the CPU rows"


def scale_point(workers: int, args: argparse.Namespace, console: Console) -> Point:
    sim = SimConfig(latency_floor_ms=args.latency_ms, latency_ms=0.0, seed=args.seed)
    voting = VotingConfig(k=args.k, speculate=args.speculate)
    with Embedded(workers=workers, concurrency=args.concurrency, sim=sim) as cluster:
        client = connect(cluster.redis_url)
        ctx = mp.get_context("spawn")  # the parent runs threads (the cluster's output drains): no fork
        stop, out = ctx.Event(), ctx.Queue()
        per_process = [
            args.runs // args.orchestrators + (i < args.runs % args.orchestrators) for i in range(args.orchestrators)
        ]
        orchestrators = [
            ctx.Process(target=drive_runs, args=(cluster.redis_url, n, args.disks, voting, stop, out))
            for n in per_process
            if n
        ]
        started = time.monotonic()
        for process in orchestrators:
            process.start()
        run_ids: list[str] = []

        def hear() -> Iterator[tuple[str, object]]:
            while not out.empty():
                yield out.get()

        time.sleep(args.warmup_s)
        run_ids += [str(run_id) for kind, run_id in hear() if kind == "run"]
        pids = {p.name: p.popen.pid for p in cluster.processes}
        groups = {
            "orchestrators": [p.pid for p in orchestrators if p.pid],
            "workers": [pid for name, pid in pids.items() if name.startswith("worker-")],
            "sim": [pids["sim-llm"]],
            "redis": [pids["redis-server"]],
        }
        commands_before = _commandstats(client)
        window = CpuWindow(groups)
        before, window_start = _window_samples(client, run_ids), time.monotonic()
        queued = []
        while time.monotonic() < window_start + args.measure_s:
            time.sleep(1.0)
            queued.append(client.llen(QUEUE))
        run_ids += [str(run_id) for kind, run_id in hear() if kind == "run"]
        done = _window_samples(client, run_ids) - before
        elapsed = time.monotonic() - window_start
        cpu = window.percent()
        commands_after = _commandstats(client)
        stop.set()
        results: list[RunResult] = []
        reported = 0
        while reported < len(orchestrators):
            kind, body = out.get(timeout=600)
            if kind == "done":
                results += [RunResult.model_validate(r) for r in body]
                reported += 1
        for process in orchestrators:
            process.join()
        job_s = time.monotonic() - started
        client.close()

    bound = workers * args.concurrency * 1000 / args.latency_ms
    rate = done / elapsed
    calls = {
        name: (calls - commands_before.get(name, (0, 0))[0], usec - commands_before.get(name, (0, 0))[1])
        for name, (calls, usec) in commands_after.items()
    }
    busy = sorted(((n, c, u) for n, (c, u) in calls.items() if c > 0), key=lambda x: -x[2])
    samples = sum(r.samples for r in results)
    point = Point(
        workers=workers,
        threads=workers * args.concurrency,
        bound_samples_per_s=round(bound, 1),
        samples_per_s=round(rate, 1),
        per_worker_samples_per_s=round(rate / workers, 1),
        utilisation=round(rate / bound, 3),
        mean_queued=round(sum(queued) / max(1, len(queued)), 1),
        cpu_percent=cpu,
        redis_cpu_ms_per_sample=round(10 * cpu["redis"] * elapsed / max(1, done), 3),
        redis_commands_per_sample={n: round(c / max(1, done), 2) for n, c, _ in busy},
        redis_command_us_per_sample={n: round(u / max(1, done), 1) for n, _, u in busy},
        runs=len(results),
        solved=sum(r.solved for r in results),
        errors=sum(r.errors for r in results),
        failures=[f"{r.run_id}: {r.failure}" for r in results if r.failure],
        samples=samples,
        samples_per_step=round(samples / max(1, sum(r.steps for r in results)), 2),
        job_s=round(job_s, 1),
        limit="",
    )
    point.limit = _limit(point, os.cpu_count() or 1)
    console.print(
        f"W={workers}: {point.samples_per_s:.0f} samples/s of {bound:.0f}, "
        f"{point.solved}/{point.runs} runs solved, {point.errors} wrong moves, {point.job_s:.0f} s"
    )
    return point


# --- part 2: what one Redis serves ---------------------------------------------------------------------------


class Load(BaseModel):
    """What one client process sent: calls (script calls, or broker tasks) and its own CPU seconds."""

    calls: int
    seconds: float
    cpu_s: float
    steps: int = 0
    run_id: str = ""


def _hanoi_steps(disks: int) -> Iterator[tuple[str, str, str]]:
    """(input hash, the right vote key, a wrong one) for each step of a Hanoi run of `disks`, over and over."""
    while True:
        state, previous = hanoi.initial_state(disks), None
        for move in hanoi.optimal_moves(disks):
            after = hanoi.apply_move(state, move)
            yield hanoi.input_hash(state, previous), hanoi.candidate(move, after), hanoi.candidate(move, state)
            state, previous = after, move


def vote_load(redis_url: str, disks: int, batch: int, start_at: float, seconds: float, out: Queue) -> None:
    """Vote-script calls as a run makes them, `batch` to a pipeline: each step's contest of k=3 gets votes until
    it decides (now and then after a red flag, or a wrong vote that costs two more), then its keys are dropped as
    a commit drops them, and the next step opens. The notify list is emptied after each batch."""
    client = connect(redis_url)
    book = VoteBook(client)
    run_id = f"bound-{os.getpid()}"
    rng = random.Random(os.getpid())
    steps, calls = _hanoi_steps(disks), 0
    step = 0
    while time.time() < start_at:
        time.sleep(0.01)
    cpu_start = time.process_time()
    while time.time() < start_at + seconds:
        with client.pipeline(transaction=False) as pipe:
            queued = 0
            while queued < batch:
                input_hash, right, wrong = next(steps)
                contest = Contest(run_id=run_id, step=step, input_hash=input_hash, k=3)
                votes = [("red_flag", "malformed")] if rng.random() < 0.01 else []
                wrong_votes = 1 if rng.random() < 0.01 else 0
                votes += [("vote", right)] + [("vote", wrong)] * wrong_votes + [("vote", right)] * (2 + wrong_votes)
                for kind, value in votes:
                    book.queue(pipe, contest, uuid.uuid4().hex, kind, value, input_tokens=300, output_tokens=60)
                dropped = contest.keys
                pipe.delete(dropped.seen, dropped.tally, dropped.payloads, dropped.status)
                queued += len(votes)
                step += 1
            pipe.delete(keys.notify(run_id))
            pipe.execute()
        calls += queued
    cpu = time.process_time() - cpu_start
    out.put(Load(calls=calls, seconds=time.time() - start_at, cpu_s=cpu, steps=step, run_id=run_id).model_dump())
    client.close()


def broker_load(redis_url: str, message: bytes, batch: int, start_at: float, seconds: float, out: Queue) -> None:
    """What the broker costs Redis per task, `batch` tasks to a pipeline: the orchestrator's LPUSH and a worker's
    BRPOP (with kombu's ack emulation off, as maker_workers/celery_app.py has it, that is all a task costs)."""
    client = connect(redis_url)
    queue, calls = f"bench-queue-{os.getpid()}", 0
    while time.time() < start_at:
        time.sleep(0.01)
    cpu_start = time.process_time()
    while time.time() < start_at + seconds:
        with client.pipeline(transaction=False) as pipe:
            for _ in range(batch):
                pipe.lpush(queue, message).brpop([queue], timeout=1)
            pipe.execute()
        calls += batch
    out.put(Load(calls=calls, seconds=time.time() - start_at, cpu_s=time.process_time() - cpu_start).model_dump())
    client.close()


class Bound(BaseModel):
    """Part 2's figures: one kind of load on a Redis of its own."""

    per_s: float  # vote-script calls/s, or broker tasks/s
    per_s_at_full_core: float  # what Redis's CPU per call allows when Redis has a whole core
    redis_cpu_percent: float  # of one core
    clients_cpu_percent: float
    redis_cpu_us_per_call: float
    clients: int
    batch: int
    checked: str  # what the run's counters in Redis say of it


def _real_message(redis_url: str, disks: int) -> bytes:
    """The bytes a sample task of a `disks`-disk run is on the broker: published for real, read back, removed."""
    request = SampleRequest(
        run_id=uuid.uuid4().hex[:12],
        step=0,
        input_hash=hanoi.input_hash(hanoi.initial_state(disks), None),
        state=hanoi.initial_state(disks),
        sample_id=uuid.uuid4().hex,
        temperature=0.1,
        k=3,
    )
    publisher = Publisher(make_app(redis_url))
    publisher.send(request, argsrepr=f"run={request.run_id} step=0")
    publisher.close()
    client = connect(redis_url)
    message = client.rpop(QUEUE)
    client.close()
    assert isinstance(message, bytes)
    return message


def _measure(
    target: Callable[..., None], extra: tuple[object, ...], args: argparse.Namespace, redis_pid: int
) -> list[Load]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # the clients are up and connected by then
    clients = [
        ctx.Process(target=target, args=(*extra, args.bound_batch, start_at, args.bound_s, out))
        for _ in range(args.bound_clients)
    ]
    for client in clients:
        client.start()
    time.sleep(max(0.0, start_at - time.time()))
    window = CpuWindow({"redis": [redis_pid]})
    time.sleep(args.bound_s)
    cpu = window.percent()
    loads = [Load.model_validate(out.get(timeout=120)) for _ in clients]
    for client in clients:
        client.join()
    loads.append(Load(calls=0, seconds=args.bound_s, cpu_s=cpu["redis"] * args.bound_s / 100))  # Redis's, last
    return loads


def _bound(loads: list[Load], args: argparse.Namespace, checked: str) -> Bound:
    *clients, redis_load = loads
    rate = sum(load.calls / load.seconds for load in clients)
    redis_percent = 100 * redis_load.cpu_s / redis_load.seconds
    return Bound(
        per_s=round(rate, 0),
        per_s_at_full_core=round(rate * 100 / max(redis_percent, 1.0), 0),
        redis_cpu_percent=round(redis_percent, 1),
        clients_cpu_percent=round(100 * sum(load.cpu_s for load in clients) / args.bound_s, 1),
        redis_cpu_us_per_call=round(1e6 * redis_load.cpu_s / max(1, sum(load.calls for load in clients)), 1),
        clients=args.bound_clients,
        batch=args.bound_batch,
        checked=checked,
    )


def redis_bound(args: argparse.Namespace) -> tuple[Bound, Bound]:
    """(vote-script calls, broker tasks) one Redis serves."""
    with tempfile.TemporaryDirectory(prefix="maker-bound-") as directory:
        port = free_port()
        server = start_redis(port, directory)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            loads = _measure(vote_load, (url, args.bound_disks), args, server.popen.pid)
            client = connect(url)
            stats = [client.hgetall(keys.stats(load.run_id)) for load in loads[:-1]]
            counted = sum(int(s.get(b"samples", 0)) for s in stats)
            decided = sum(int(s.get(b"decisions", 0)) for s in stats)
            sent, steps = sum(load.calls for load in loads[:-1]), sum(load.steps for load in loads[:-1])
            checked = f"{counted}/{sent} calls counted, {decided}/{steps} contests decided"
            votes = _bound(loads, args, checked)
            message = _real_message(url, args.bound_disks)
            client.flushall()
            client.close()
            broker = _bound(
                _measure(broker_load, (url, message), args, server.popen.pid),
                args,
                f"messages of {len(message)} bytes",
            )
        finally:
            server.stop()
    return votes, broker


# --- the report ----------------------------------------------------------------------------------------------


class Result(BaseModel):
    latency_ms: float
    concurrency: int
    runs_at_once: int
    disks: int
    points: list[Point]
    vote_script: Bound | None
    broker: Bound | None
    redis_ms_per_sample: float  # Redis's CPU per whole sample, from part 1
    workers_one_redis_feeds_script_only: float | None
    workers_one_redis_feeds_whole_sample: float | None


def _print_points(points: list[Point], args: argparse.Namespace, console: Console) -> None:
    table = Table(
        title=f"Scale-out: {args.runs} Hanoi runs of {args.disks} disks at once, model latency "
        f"{args.latency_ms:.0f} ms (constant), {args.concurrency} threads a worker; "
        f"CPU in % of one core ({os.cpu_count()} cores)"
    )
    for column in (
        "W",
        "bound/s",
        "samples/s",
        "per worker/s",
        "of bound",
        "queued",
        "CPU orch/workers/sim/redis",
        "CPU machine (others)",
        "Redis ms/sample",
        "runs ok",
        "limit",
    ):
        table.add_column(column, justify="left" if column == "limit" else "right")
    for p in points:
        cpu = p.cpu_percent
        table.add_row(
            str(p.workers),
            f"{p.bound_samples_per_s:.0f}",
            f"{p.samples_per_s:.0f}",
            f"{p.per_worker_samples_per_s:.1f}",
            f"{100 * p.utilisation:.0f}%",
            f"{p.mean_queued:.0f}",
            f"{cpu['orchestrators']:.0f}/{cpu['workers']:.0f}/{cpu['sim']:.0f}/{cpu['redis']:.0f}",
            f"{cpu['machine']:.0f} ({cpu['others']:.0f})",
            f"{p.redis_cpu_ms_per_sample:.2f}",
            f"{p.solved}/{p.runs}, {p.errors} err",
            p.limit,
        )
    console.print(table)
    for p in points:
        if p.failures:
            console.print(f"W={p.workers}: failed runs: {'; '.join(p.failures[:5])}")


def _print_bound(votes: Bound, broker: Bound, console: Console) -> None:
    table = Table(title="One Redis, on its own: how many calls it serves")
    for column in ("load", "per s", "Redis CPU", "clients CPU", "Redis CPU per call", "per s at a full core", "check"):
        table.add_column(column, justify="left" if column in ("load", "check") else "right")
    for name, bound in (("vote script (EVALSHA), k=3 contests", votes), ("broker: LPUSH + BRPOP a task", broker)):
        table.add_row(
            name,
            f"{bound.per_s:,.0f}",
            f"{bound.redis_cpu_percent:.0f}%",
            f"{bound.clients_cpu_percent:.0f}%",
            f"{bound.redis_cpu_us_per_call:.1f} us",
            f"{bound.per_s_at_full_core:,.0f}",
            bound.checked,
        )
    console.print(table)


def redis_ms_per_sample(points: list[Point]) -> float:
    """Redis's CPU per sample as its CPU grew with samples/s from point to point (least squares), so that what
    it spends idle (its cron, the workers' heartbeats) is not charged to the samples; with one point, the ratio."""
    if len(points) < 2:
        return points[0].redis_cpu_ms_per_sample
    xs = [p.samples_per_s for p in points]
    ys = [10 * p.cpu_percent["redis"] for p in points]  # ms of CPU a second
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return points[0].redis_cpu_ms_per_sample
    return round(sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers-list", default="1,2,4,8", help="worker process counts, comma-separated")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker process")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the simulated model's latency, constant")
    parser.add_argument("--runs", type=int, default=32, help="Hanoi runs at once (the job)")
    parser.add_argument("--orchestrators", type=int, default=2, help="processes the runs are shared among")
    parser.add_argument("--disks", type=int, default=3, help="disks of a run (runs start again till the window ends)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--speculate", type=int, default=0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--measure-s", type=float, default=20.0, help="the window samples/s is measured over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bound-s", type=float, default=10.0, help="part 2's load time; 0 skips part 2")
    parser.add_argument("--bound-clients", type=int, default=3, help="part 2's client processes")
    parser.add_argument("--bound-batch", type=int, default=100, help="calls to a pipeline")
    parser.add_argument("--bound-disks", type=int, default=20, help="the Hanoi size part 2's votes and messages are of")
    args = parser.parse_args()
    console = Console(width=200)

    points = [scale_point(int(w), args, console) for w in args.workers_list.split(",")]
    votes, broker = redis_bound(args) if args.bound_s > 0 else (None, None)
    _print_points(points, args, console)
    per_worker = max(p.per_worker_samples_per_s for p in points)
    redis_ms = redis_ms_per_sample(points)
    feeds_whole = round(1000 / redis_ms / per_worker, 0) if redis_ms > 0 else None
    feeds_script = None
    if votes and broker:
        _print_bound(votes, broker, console)
        feeds_script = round(votes.per_s_at_full_core / per_worker, 0)
        console.print(
            f"One Redis holds about {votes.per_s_at_full_core:,.0f} vote-script calls/s at a full core (measured: "
            f"{votes.per_s:,.0f}/s with Redis at {votes.redis_cpu_percent:.0f}%), and about "
            f"{broker.per_s_at_full_core:,.0f} broker tasks/s. At {args.latency_ms:.0f} ms latency and "
            f"{args.concurrency} threads a worker process draws about {per_worker:.0f} samples/s, so one Redis feeds "
            f"about {feeds_script:,.0f} worker processes of {args.concurrency} threads before the vote script alone "
            "is the limit."
        )
    if feeds_whole is not None:
        console.print(
            f"A whole sample (its broker message, the vote script, the orchestrator's wait, reads and commit) cost "
            f"Redis about {redis_ms:.3f} ms of CPU in part 1 (how Redis's CPU grew with samples/s): about "
            f"{1000 / redis_ms:,.0f} samples/s a Redis core, or {feeds_whole:,.0f} such worker processes."
        )
    result = Result(
        latency_ms=args.latency_ms,
        concurrency=args.concurrency,
        runs_at_once=args.runs,
        disks=args.disks,
        points=points,
        vote_script=votes,
        broker=broker,
        redis_ms_per_sample=redis_ms,
        workers_one_redis_feeds_script_only=feeds_script,
        workers_one_redis_feeds_whole_sample=feeds_whole,
    )
    print(result.model_dump_json(), flush=True)


if __name__ == "__main__":
    main()
