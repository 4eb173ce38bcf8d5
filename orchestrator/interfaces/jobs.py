"""Jobs: the runs an MCP server carries out in its background threads, recorded in Redis.

A job is one run, under the run's own id, so its progress is already in Redis (`api.progress`). The job's
record (kind, title, when it was submitted, started and finished, how it ended, its report) is one field of
the `keys.jobs()` hash. So a restarted server, or another one on the same cluster, lists, follows and
cancels jobs from Redis alone; only the thread that drives a job lives in one process. A job whose server
died mid-run stays `running` in Redis with nothing driving it: `maker hanoi|run --resume JOB_ID --redis-url
URL` goes on with it.

`SharedCluster` is what every job and vote of one server runs on: the cluster a Redis URL names, or the
embedded default, started once by the first call that needs it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import redis
from pydantic import BaseModel

from maker_workers import keys
from maker_workers.domains.base import Task
from maker_workers.errors import ClusterFailed, ConfigError, MakerError, store_errors
from orchestrator import api
from orchestrator.cluster.connect import Cluster, ClusterOptions, cluster_for_run
from orchestrator.engine.runner import VotingConfig
from orchestrator.engine.store import RunStore
from orchestrator.interfaces.api import Hooks
from orchestrator.reports.report import RunCounts, cost_usd

log = logging.getLogger(__name__)

MAX_ACTIVE_JOBS = 4
POLL_S = 0.25  # how often a waiting job_status looks again


class SharedCluster:
    """The cluster every call of one server uses: the one `options.redis_url` names, or the embedded default,
    started by the first call that needs it (a few seconds) and kept until `close`."""

    def __init__(self, options: ClusterOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self._running: Cluster | None = None
        self._closed = False

    @property
    def embedded(self) -> bool:
        return self.options.redis_url is None

    @property
    def started(self) -> bool:
        return self._running is not None

    def get(self) -> Cluster:
        """The running cluster (started now if need be); ClusterFailed if a process of the embedded one died."""
        with self._lock:
            if self._closed:  # a late call must not start a cluster that nothing would stop
                raise ClusterFailed("the MCP server is shutting down")
            if self._running is None:
                self._running = self._stack.enter_context(cluster_for_run(self.options))
            running = self._running
        running.health_check()
        return running

    def for_run(self) -> ClusterOptions:
        """What each run is given: the running cluster by its URLs, so that no run starts a cluster of its own."""
        running = self.get()
        return ClusterOptions(redis_url=running.redis_url, broker_url=running.broker_url)

    def close(self) -> None:
        with self._lock:
            self._closed, self._running = True, None
            self._stack.close()


class JobState(StrEnum):
    QUEUED = "queued"  # recorded; its thread has not begun the run loop yet
    RUNNING = "running"
    DONE = "done"  # reached its end (for Hanoi: the last move; the report says whether it is solved)
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
Kind = Literal["hanoi", "task"]


class JobRecord(BaseModel):
    """What Redis keeps of a job beside its run."""

    job_id: str
    kind: Kind
    title: str
    submitted: float
    started: float | None = None  # when its run loop began
    finished: float | None = None
    state: JobState | None = None  # set when its thread ends; until then the run in Redis says how it stands
    error: str | None = None  # why it ended without a report
    report: dict[str, Any] | None = None  # RunReport (hanoi) or TaskReport (task) as JSON


class JobStatus(BaseModel):
    """Where a job stands, read from Redis: steps, samples, red flags, tokens and cost so far, and an ETA."""

    job_id: str
    kind: Kind
    title: str
    state: JobState
    steps_done: int
    total_steps: int | None  # None for a task whose end is a condition, not a count
    samples: int
    votes: int
    red_flags: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None when a model's price is unknown
    elapsed_s: float
    eta_s: float | None  # from the pace so far; None until a step is done or when the total is unknown
    cancel_requested: bool
    failure: str | None = None
    submitted: float  # Unix time


Run = Callable[[str, ClusterOptions, Hooks], RunCounts]


@dataclass
class _Driven:
    """A job this process drives."""

    record: JobRecord
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Jobs:
    """The jobs of one cluster: submitted here and run in threads, or found in Redis."""

    def __init__(self, cluster: SharedCluster, max_active: int = MAX_ACTIVE_JOBS) -> None:
        self.cluster = cluster
        self.max_active = max_active
        self._lock = threading.Lock()
        self._driven: dict[str, _Driven] = {}

    def submit(self, kind: Kind, title: str, task: Task, voting: VotingConfig, run: Run) -> JobRecord:
        """Record a job and start its thread; `run(job_id, cluster, hooks)` carries it out and reports."""
        with self._lock:
            if len(self._driven) >= self.max_active:
                raise ConfigError(
                    f"{len(self._driven)} jobs are running already, the most this server runs at once: "
                    "wait for one to end (job_status with wait_s) or cancel one (cancel_job)"
                )
            client = self.cluster.get().client
            job_id = uuid.uuid4().hex[:12]
            # Recorded as a run now (the run loop's own start is then a no-op), so its status reads at once.
            RunStore(client, job_id).start(task.definition(), voting.model_dump())
            job = _Driven(JobRecord(job_id=job_id, kind=kind, title=title, submitted=time.time()))
            _save(client, job.record)
            job.thread = threading.Thread(target=self._drive, args=(job, run), name=f"job-{job_id}", daemon=True)
            self._driven[job_id] = job
            job.thread.start()
        return job.record

    def _drive(self, job: _Driven, run: Run) -> None:
        record = job.record
        client = self.cluster.get().client

        def on_start(run_id: str, steps_done: int) -> None:
            record.started = time.time()
            _save(client, record)
            if job.cancel.is_set():  # asked before the loop began, whose start clears earlier requests
                RunStore(client, run_id).cancel()

        try:
            report = run(record.job_id, self.cluster.for_run(), Hooks(on_start=on_start))
        except MakerError as exc:
            record.state, record.error = JobState.FAILED, str(exc)
        except Exception:  # a bug, at a thread's edge: logged here, and the job says it ended
            log.exception("job %s crashed", record.job_id)
            record.state, record.error = JobState.FAILED, "the job crashed; the MCP server's log has the details"
        else:
            record.state, record.report = _ended(report.failure), report.model_dump(mode="json")
        record.finished = time.time()
        with contextlib.suppress(MakerError):  # when the server shuts its cluster down, Redis may be gone
            _save(client, record)
        with self._lock:
            del self._driven[record.job_id]

    def _client(self, job_id: str) -> redis.Redis:
        if self.cluster.embedded and not self.cluster.started:
            raise ConfigError(f"no job {job_id!r}: this server has not run any job yet")
        return self.cluster.get().client

    def record(self, job_id: str) -> JobRecord:
        """The job's record; ConfigError naming the id when there is no such job."""
        client = self._client(job_id)
        with store_errors(f"reading job {job_id}"):
            raw = client.hget(keys.jobs(), job_id)
        if raw is None:
            raise ConfigError(f"no job {job_id!r} on this cluster: list_jobs shows the jobs there are")
        return JobRecord.model_validate_json(raw)

    def status(self, job_id: str) -> JobStatus:
        record = self.record(job_id)
        client = self._client(job_id)
        store = RunStore(client, job_id)
        progress = api.progress(client, job_id)
        stats = store.stats()
        state = record.state or self._live_state(record, progress)
        now = time.time()
        eta = None
        if state is JobState.RUNNING and record.started and progress.total_steps and progress.steps_done:
            pace = (now - record.started) / progress.steps_done
            eta = round(pace * (progress.total_steps - progress.steps_done), 1)
        return JobStatus(
            job_id=job_id,
            kind=record.kind,
            title=record.title,
            state=state,
            steps_done=progress.steps_done,
            total_steps=progress.total_steps,
            samples=progress.samples,
            votes=progress.votes,
            red_flags=progress.red_flags,
            input_tokens=stats.get("input_tokens", 0),
            output_tokens=stats.get("output_tokens", 0),
            cost_usd=cost_usd(stats),
            elapsed_s=round((record.finished or now) - record.submitted, 1),
            eta_s=eta,
            cancel_requested=store.stopped() == "cancelled",
            failure=record.error or progress.failure,
            submitted=record.submitted,
        )

    def _live_state(self, record: JobRecord, progress: api.RunProgress) -> JobState:
        """How a job stands before its record says how it ended."""
        if progress.finished and record.job_id not in self._driven:  # its server stopped before recording it
            return _ended(progress.failure)
        return JobState.RUNNING if record.started else JobState.QUEUED

    def wait(self, job_id: str, timeout_s: float, on_step: Callable[[JobStatus], None]) -> JobStatus:
        """The job's status once it has ended or `timeout_s` has passed; `on_step` hears each new step count."""
        deadline = time.monotonic() + timeout_s
        heard = None
        while True:
            status = self.status(job_id)
            if status.steps_done != heard:
                heard = status.steps_done
                on_step(status)
            left = deadline - time.monotonic()
            if status.state in ENDED or left <= 0:
                return status
            time.sleep(min(left, POLL_S))

    def cancel(self, job_id: str, wait_s: float) -> JobStatus:
        """Stop sending the job's samples; when this server drives it, wait (up to `wait_s`) until it has ended."""
        status = self.status(job_id)
        if status.state in ENDED:
            return status
        job = self._driven.get(job_id)
        if job is not None:
            job.cancel.set()
        RunStore(self._client(job_id), job_id).cancel()
        if job is not None and job.thread is not None:
            job.thread.join(wait_s)
        return self.status(job_id)

    def latest(self, limit: int) -> list[JobStatus]:
        """The latest `limit` jobs, newest first."""
        if self.cluster.embedded and not self.cluster.started:
            return []
        client = self.cluster.get().client
        with store_errors("listing jobs"):
            raw = client.hvals(keys.jobs())
        records = sorted((JobRecord.model_validate_json(r) for r in raw), key=lambda r: r.submitted, reverse=True)
        return [self.status(r.job_id) for r in records[:limit]]

    def close(self, wait_s: float) -> None:
        """Cancel the jobs this server drives, waiting up to `wait_s` for them to record how they ended."""
        with self._lock:
            driven = list(self._driven.values())
        for job in driven:
            job.cancel.set()
            with contextlib.suppress(MakerError):
                RunStore(self.cluster.get().client, job.record.job_id).cancel()
        deadline = time.monotonic() + wait_s
        for job in driven:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))


def _ended(failure: str | None) -> JobState:
    if not failure:
        return JobState.DONE
    return JobState.CANCELLED if failure == "cancelled" else JobState.FAILED


def _save(client: redis.Redis, record: JobRecord) -> None:
    with store_errors(f"recording job {record.job_id}"):
        client.hset(keys.jobs(), record.job_id, record.model_dump_json())
