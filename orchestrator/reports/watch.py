"""Any run, seen from any machine that reaches its Redis: `maker status` (one line per run, or one run's
state) and `maker watch` (a live view until the run ends).

Read from Redis only: the run's meta hash (task, k, start, end), its checkpoint (steps done), its counters
(the vote script's stats hash) and its event stream (the last events, and the workers heard from).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from enum import StrEnum

import redis
from pydantic import BaseModel, Field
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from maker_workers import keys
from maker_workers.errors import ConfigError, store_errors
from orchestrator.engine.store import RunStore
from orchestrator.interfaces.api import RunProgress, progress
from orchestrator.reports.report import RunCounts, cost_usd

EVENTS_READ = 1000  # the latest events a reading looks through for the workers heard from
EVENTS_SHOWN = 8
RATE_WINDOW_S = 10.0  # `maker watch` measures steps/s over this much of the latest readings


class RunState(StrEnum):
    RUNNING = "running"
    STALLED = "stalled"  # not ended, and no orchestrator holds its lease: resume it with --resume
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Event(BaseModel):
    """One entry of the run's event stream, as shown."""

    id: str  # the stream entry's
    at: float  # Redis's clock when it was added, seconds
    kind: str
    step: int | None = None
    worker: str | None = None
    detail: str = ""  # the candidate, reason or wait the entry carries

    @staticmethod
    def of(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
        text = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        detail = next((text[f] for f in ("reason", "candidate", "wait_s", "k") if f in text), "")
        step = text.get("step", "")
        return Event(
            id=entry_id.decode(),
            at=int(entry_id.split(b"-")[0]) / 1000,
            kind=text.get("kind", ""),
            step=int(step) if step.lstrip("-").isdigit() else None,
            worker=text.get("worker"),
            detail=detail[:80],
        )


class RunStatus(RunProgress):
    """Where a run stands and how it went so far: what `maker status --json` prints."""

    state: RunState
    k: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    elapsed_s: float = 0.0
    steps_per_s: float | None = None
    eta_s: float | None = None
    red_flags_by_reason: dict[str, int] = Field(default_factory=dict)
    errors: int = 0
    late_votes: int = 0
    duplicates: int = 0
    rounds_per_step: float | None = None
    max_rounds: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    workers: list[str] = Field(default_factory=list)  # heard from in the latest events
    last_events: list[Event] = Field(default_factory=list)


def run_ids(client: redis.Redis) -> list[str]:
    """Every run this Redis holds, by its meta hash (SCAN, never KEYS: a busy Redis is not blocked)."""
    with store_errors("listing the runs"):
        found = {keys.run_of_meta(key.decode()) for key in client.scan_iter(match=keys.meta_pattern(), count=1000)}
    return sorted(found)


def read_status(client: redis.Redis, run_id: str, *, events: bool = True) -> RunStatus:
    """One reading of a run; `events` adds the last events and the workers heard from. ConfigError when
    the run is not in this Redis."""
    with store_errors(f"reading run {run_id}"):
        if not client.exists(keys.meta(run_id)):
            raise ConfigError(f"no run {run_id!r} in this Redis: `maker status` lists its runs; check --redis-url")
        base = progress(client, run_id)
        meta = {k.decode(): v.decode() for k, v in client.hgetall(keys.meta(run_id)).items()}
        held = client.exists(keys.lease(run_id)) == 1
        latest = client.xrevrange(keys.events(run_id), count=EVENTS_READ) if events else []
    counts = RunStore(client, run_id).stats()
    started = float(meta["started"]) if "started" in meta else None
    ended = float(meta["ended"]) if meta.get("ended") else None
    elapsed = max(0.0, (ended or time.time()) - started) if started else 0.0
    # The pace of the latest attempt (a resumed run goes on from its checkpoint), not of the whole run.
    since = float(meta.get("resumed") or started or 0)
    done_now = base.steps_done - int(meta.get("resumed_step") or 0)
    took = (ended or time.time()) - since if since else 0.0
    rate = done_now / took if took > 0 and done_now > 0 else None
    state = _state(base, held)
    k = int(meta["k_raised"]) if "k_raised" in meta else json.loads(meta.get("config") or "{}").get("k")
    recent = [Event.of(entry_id, fields) for entry_id, fields in latest]
    return RunStatus(
        **base.model_dump(),
        state=state,
        k=k,
        started_at=started,
        ended_at=ended,
        elapsed_s=round(elapsed, 3),
        steps_per_s=rate,
        eta_s=_eta(base, rate) if state is RunState.RUNNING else None,
        red_flags_by_reason=RunCounts.by_reason(counts),
        errors=counts.get("errors", 0),
        late_votes=counts.get("late_votes", 0),
        duplicates=counts.get("duplicates", 0),
        rounds_per_step=counts["rounds"] / base.steps_done if base.steps_done and "rounds" in counts else None,
        max_rounds=counts.get("max_rounds", 0),
        input_tokens=counts.get("input_tokens", 0),
        output_tokens=counts.get("output_tokens", 0),
        cost_usd=cost_usd(counts),
        workers=sorted({e.worker for e in recent if e.worker}),
        last_events=recent[:EVENTS_SHOWN][::-1],
    )


def _state(base: RunProgress, held: bool) -> RunState:
    if not base.finished:
        return RunState.RUNNING if held else RunState.STALLED
    if not base.failure:
        return RunState.DONE
    return RunState.CANCELLED if base.failure == "cancelled" else RunState.FAILED


def _eta(base: RunProgress, rate: float | None) -> float | None:
    if base.finished or not rate or base.total_steps is None:
        return None
    return max(0, base.total_steps - base.steps_done) / rate


def all_status(client: redis.Redis) -> list[RunStatus]:
    """Every run's reading, oldest first (without their events: one line each)."""
    readings = []
    for run_id in run_ids(client):
        try:
            readings.append(read_status(client, run_id, events=False))
        except ConfigError:  # ended and expired between the scan and the read
            continue
    return sorted(readings, key=lambda r: r.started_at or 0.0)


def _steps(status: RunStatus) -> str:
    if status.total_steps is None:
        return f"{status.steps_done} steps"
    share = 100 * status.steps_done / status.total_steps if status.total_steps else 100.0
    return f"{status.steps_done}/{status.total_steps} steps ({share:.0f}%)"


def _cost(status: RunStatus) -> str:
    return "cost unknown" if status.cost_usd is None else f"${status.cost_usd:.4f}"


def one_line(status: RunStatus) -> str:
    """A run in one line, for `maker status` without a run id."""
    return (
        f"{status.run_id}  {status.state.value:<9}  {status.task}  {_steps(status)}  samples {status.samples}  "
        f"red flags {status.red_flags}  k={status.k}  {_cost(status)}  {status.elapsed_s:.0f} s"
    )


def lines(status: RunStatus) -> list[str]:
    """One run's state, for `maker status RUN_ID` and the top of `maker watch`."""
    speed = "" if status.steps_per_s is None else f", {status.steps_per_s:.1f} steps/s"
    eta = "" if status.eta_s is None else f", ETA {status.eta_s:.0f} s"
    rounds = "" if status.rounds_per_step is None else f"{status.rounds_per_step:.2f} a step, "
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(status.red_flags_by_reason.items()))
    out = [
        f"run {status.run_id} ({status.task}): {status.state.value}, {_steps(status)}{speed}{eta}, "
        f"{status.elapsed_s:.0f} s",
        f"k={status.k}, samples {status.samples}: votes {status.votes}, red flags {status.red_flags}"
        + (f" ({reasons})" if reasons else "")
        + f", errors {status.errors}, late {status.late_votes}",
        f"rounds {rounds}max {status.max_rounds}; tokens in/out {status.input_tokens}/{status.output_tokens}; "
        f"{_cost(status)}",
        f"workers heard from: {', '.join(status.workers) or 'none in the latest events'}",
    ]
    if status.failure:
        out.append(f"failure: {status.failure}")
    return out


class Watcher:
    """`maker watch`: frames of one run, each after its event stream moved (or `wake_s` passed), until it ends.

    The stream is read from where the last frame left it, so every event counts towards the workers heard from
    and the last events, however many arrive between two frames."""

    def __init__(self, client: redis.Redis, run_id: str, wake_s: float = 1.0) -> None:
        self.client = client
        self.run_id = run_id
        self.wake_s = wake_s
        first = read_status(client, run_id)
        self.workers = set(first.workers)
        self.events: deque[Event] = deque(first.last_events, maxlen=EVENTS_SHOWN)
        self._last_id = first.last_events[-1].id if first.last_events else "0-0"  # on from the first reading
        self._readings: deque[tuple[float, int]] = deque()
        self.status = self._seen(first)

    def _seen(self, status: RunStatus) -> RunStatus:
        """The reading, with this watch's steps/s (over the last seconds) and ETA, workers and events."""
        now = time.monotonic()
        self._readings.append((now, status.steps_done))
        while now - self._readings[0][0] > RATE_WINDOW_S:
            self._readings.popleft()
        since, done = self._readings[0]
        if now - since >= 1.0 and not status.finished:
            status.steps_per_s = (status.steps_done - done) / (now - since)
            status.eta_s = _eta(status, status.steps_per_s)
        status.workers, status.last_events = sorted(self.workers), list(self.events)
        return status

    def frames(self) -> Iterator[RunStatus]:
        yield self.status
        while not self.status.finished:
            stream = {keys.events(self.run_id): self._last_id}
            with store_errors(f"following run {self.run_id}"):
                got = self.client.xread(stream, count=1000, block=round(self.wake_s * 1000))
            for _, entries in got or []:
                for entry_id, fields in entries:
                    event = Event.of(entry_id, fields)
                    self.events.append(event)
                    if event.worker:
                        self.workers.add(event.worker)
                    self._last_id = event.id
            self.status = self._seen(read_status(self.client, self.run_id, events=False))
            yield self.status


def frame(status: RunStatus) -> Group:
    """One frame of `maker watch`: the run's state, then its last events."""
    events = Table("time", "kind", "step", "worker", "detail", box=None, pad_edge=False)
    for event in status.last_events:
        clock = time.strftime("%H:%M:%S", time.localtime(event.at))
        step = "" if event.step is None else str(event.step)
        events.add_row(clock, event.kind, step, event.worker or "", event.detail)
    summary = Panel("\n".join(lines(status)), title=f"maker watch {status.run_id}", expand=False)
    return Group(summary, events)


def watch(client: redis.Redis, run_id: str, console: Console, *, once: bool = False) -> RunStatus:
    """Draw the run live until it ends (one frame with `once`); returns the last reading."""
    watcher = Watcher(client, run_id)
    if once:
        console.print(frame(watcher.status))
        return watcher.status
    with Live(frame(watcher.status), console=console, refresh_per_second=4) as live:
        for status in watcher.frames():
            live.update(frame(status))
    return watcher.status
