"""The run loop: keep enough samples in flight, wait for outcomes, commit, checkpoint.

The orchestrator holds no vote in memory that Redis does not also hold: tallies and decisions live
in Redis (written by the workers' Lua script), the committed state is checkpointed after every step.

Speculation hides model latency: while step i is voted on, steps i+1.. are voted on too, each with the
input the leading answer of the step before would give. Every contest is keyed by its exact input, so a
guess that loses costs only its samples; it can never add a vote to another input, and each committed
step is still decided ahead-by-k among samples of exactly its committed input. It is on by default, its
depth adapted to what it wastes (orchestrator/engine/speculation.py); `speculate=0` turns it off. On a model whose
samples cost money a waste budget holds it (and hedging) to `max_waste` of the samples sent, 5% by default.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import redis
from celery import Celery
from pydantic import BaseModel, Field, model_validator

from maker_workers import keys
from maker_workers.connections import never_twice, retrying
from maker_workers.domains.base import JSON, Task
from maker_workers.errors import (
    BudgetSpent,
    Cancelled,
    ConfigError,
    MakerError,
    Rejected,
    StepFailed,
    StoreError,
    store_errors,
)
from maker_workers.sampling import SampleRequest
from maker_workers.votes import Contest, Notice, Outcome, Snapshot, VoteBook
from orchestrator.engine.budget import Spend
from orchestrator.engine.meanings import rule_to_measure
from orchestrator.engine.publisher import LATER, URGENT, Publisher
from orchestrator.engine.speculation import Depth, WasteBudget
from orchestrator.engine.store import Checkpoint, RunStore
from orchestrator.engine.watch_reliability import ReliabilityWatch
from orchestrator.planning.method import to_enqueue
from orchestrator.planning.reliability import LiveReliability
from orchestrator.reports.samples import Sample, Tail, thrown

NOTICE_BATCH = 64  # notices heard of in one wake-up, at most
EARLY_SAMPLES = 30  # a run whose first this many answers are all red flags is stopped: the model cannot do the task
EARLY_VOTES = 30  # a step with this many votes where no answer came up more than SCATTERED times is stopped
SCATTERED = 2  # (ahead-by-k needs an answer that repeats; with wrong answers spread out it needs no p above 0.5)
HOW_TO_CHECK = (
    "measure the model on this task with `maker calibrate` and plan k with `maker plan` before spending more "
    "(`maker samples RUN_ID` lists what it said, on a cluster's Redis)"
)


class VotingConfig(BaseModel):
    k: int = Field(3, ge=1, description="margin the winner needs over the runner-up")
    max_samples: int = Field(200, ge=1, description="a step that draws this many samples undecided FAILS")
    max_red_flags: int = Field(100, ge=1, description="a step with this many red flags FAILS")
    max_errors: int = Field(20, ge=1, description="a step whose provider calls fail this often FAILS")
    first_temperature: float = 0.0
    later_temperature: float = 0.1
    sample_timeout_s: float = Field(
        300.0, gt=0, description="a sample not heard of by then is replaced (the cap of the adaptive timeout)"
    )
    sample_timeout_floor_s: float = Field(
        1.0, gt=0, description="the adaptive timeout (4x the recent p99 latency) never goes below this"
    )
    wait_s: float = Field(2.0, gt=0, description="longest blocking wait before checking the cluster's health")
    stall_warning_s: float = Field(30.0, gt=0, description="silence from every worker this long is reported")
    speculate: int | None = Field(
        None,
        ge=0,
        description="steps to vote on ahead of the committed one, on the leading answer (0: none); "
        "None adapts the depth to the samples it wastes, up to speculate_max",
    )
    speculate_max: int = Field(32, ge=1, description="the deepest adaptive speculation goes")
    speculate_waste: float = Field(
        0.05, gt=0, lt=1, description="adaptive speculation keeps the share of samples it wastes near this"
    )
    max_waste: float | None = Field(
        None,
        ge=0,
        le=1,
        description="speculation and hedging never let the share of samples wasted or at risk pass this (1: no "
        "cap); None: 0.05 once the run's samples cost money, no cap while they cost nothing",
    )
    max_cost_usd: float | None = Field(None, gt=0, description="no new samples once the run has spent this much")
    drain_s: float = Field(
        30.0, ge=0, description="at the end, how long to wait for samples in flight, so the report counts them"
    )
    target_reliability: float | None = Field(
        None, gt=0, lt=1, description="the chance of an error-free run planned for; the run warns when off it"
    )
    adaptive_k: bool = Field(False, description="raise k for the remaining steps when the votes say it is needed")
    calibrated_spread: tuple[float, float] | None = Field(
        None,
        description="p across steps as Beta(a, b), from the calibration the run was planned on: the live reading "
        "never claims more than it allows (votes alone cannot see a step every sample gets wrong)",
    )
    keep_tallies: bool = Field(False, description="keep committed contests' votes in Redis (a vote reads them)")
    trace_samples: bool = Field(False, description="hand each committed step what its samples said (--trace-samples)")
    contest_ttl_s: int = Field(
        3_600, ge=60, description="the TTL a guess opened again gets back (the workers' MAKER_CONTEST_TTL_S)"
    )
    linger_s: int = Field(
        60,
        ge=1,
        description="a committed contest's status, and a dropped guess's keys, stay this long (a sample landing "
        "later is recorded as late); Redis holds what is live, the answer log and the trace the history",
    )
    lease_s: float = Field(15.0, gt=0, description="a run whose orchestrator is silent this long may be taken over")

    @model_validator(mode="after")
    def _cap_allows_a_decision(self) -> VotingConfig:
        if self.max_samples < self.k:
            raise ValueError(f"max_samples ({self.max_samples}) is below k ({self.k}): no step could ever be decided")
        return self


class CommittedStep(BaseModel):
    step: int
    state: JSON  # the step's input
    answer: JSON  # the winning payload
    next_state: JSON
    samples: int
    votes: int
    winner_votes: int
    runner_up_votes: int
    red_flags: int
    rounds: int
    spent_usd: float | None = None  # the run's spend when the step was committed; None when unknown
    sent_samples: int = 0  # the samples this runner had sent when the step was committed (guesses' included)
    wasted_samples: int = 0  # of those, the ones no committed step counted and none can (dropped, landed late)
    k: int = 0  # the margin this step was decided with
    copies: int = 0  # votes whose text repeated one already counted in the step, byte for byte
    winner_distinct: int | None = None  # the different texts among the winner's votes
    p_estimate: float | None = None  # p as the votes so far imply it (no ground truth; copies counted once)
    reliability: float | None = None  # the chance the whole run is error-free, at that p and this k
    copy_share: float | None = None  # copies among the votes after each step's first, over the recent steps
    said: list[Sample] | None = None  # with trace_samples: each sample of the step, its text and verdict


@dataclass
class _Open:
    """The orchestrator's view of one contest it feeds samples to; Redis holds the truth."""

    step: int
    state: JSON
    previous: JSON
    contest: Contest
    known: Snapshot
    sent: int
    in_flight: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    last_error: str | None = None
    patience: int = 1  # doubles each time samples are presumed lost with no sign of a loss (a stall)
    closed: bool = False  # committed, or dropped from the window: fed no more
    basis: str | None = None  # the guess the next contest in the window was built on
    hedged: bool = False  # an extra sample went out because its samples were slow and the run waited on it
    fresh: bool = True  # known to be opened here first: nobody voted in it, nobody sent it a sample before
    first_sent: bool = False  # this runner sent its T=0 sample before (a dropped guess opened again)

    @property
    def decided(self) -> bool:
        return self.known.decided

    @property
    def guess(self) -> str | None:
        """The vote key the next step's guess builds on: the winner, else a leader ahead by at least one."""
        if self.known.decided:
            return self.known.winner
        return self.known.leader if self.known.margin > 0 else None

    def hear(self, notice: Notice) -> None:
        """What a notice says of the sample itself; its snapshot is taken by `Runner._see`."""
        self.in_flight.pop(notice.sample_id, None)
        self.patience = 1
        if notice.outcome is Outcome.ERROR:
            self.last_error = notice.reason

    def committed(self, task: Task) -> CommittedStep:
        known = self.known
        if known.winner is None:
            raise StoreError(f"step {self.step} is decided but Redis holds no winner")
        answer = known.leading_answer
        return CommittedStep(
            step=self.step,
            state=self.state,
            answer=answer,
            next_state=task.next_state(self.state, self.step, self.previous, answer),
            samples=known.samples,
            votes=known.votes,
            winner_votes=known.leader_votes,
            runner_up_votes=known.runner_up_votes,
            red_flags=known.red_flags,
            rounds=self.rounds,
            k=self.contest.k,
            copies=known.copies,
            winner_distinct=known.winner_distinct,
        )


class Runner:
    """Drives one run of `task` through the cluster behind `broker` and `client`."""

    def __init__(
        self,
        client: redis.Redis,
        broker: Celery,
        config: VotingConfig,
        task: Task,
        *,
        run_id: str | None = None,
        health_check: Callable[[], None] = lambda: None,
        on_stall: Callable[[float], None] = lambda _: None,
        on_warning: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.client = client = retrying(client)
        self.broker = broker
        self.publisher = Publisher(broker)
        self.config = config
        self.task = task
        self.run_id = keys.check_run_id(run_id) if run_id else uuid.uuid4().hex[:12]
        self._health_check = health_check
        self._on_stall = on_stall
        self._on_warning = on_warning
        self.k = config.k  # raised by --adaptive-k, for contests opened from then on
        live = LiveReliability(spread=config.calibrated_spread, total_steps=task.total_steps())
        self.reliability = ReliabilityWatch(
            live, config.target_reliability, config.adaptive_k, task.total_steps(), on_warning
        )
        self._outcomes: Counter[Outcome] = Counter()  # what this runner's samples came to, for the early stop
        self._tail: Tail | None = None  # with trace_samples
        self._stop_read_at = 0.0  # when a skip last made the run's stop flag be read
        self._holder = f"{socket.gethostname()} pid {os.getpid()} #{uuid.uuid4().hex[:8]}"
        # Every sample id this runner sends starts so: a notice is known to be this attempt's even after the
        # sample was forgotten (`_forget_unheard`), so a refusal that comes that late still ends the run.
        self._sample_prefix = uuid.uuid4().hex[:8]
        self._latencies: deque[float] = deque(maxlen=500)  # recent send-to-outcome times, seconds
        self._timeout_s = config.sample_timeout_s  # recomputed from them every wait_s
        self._landed_sent_at = 0.0  # when the latest-sent sample that has landed was sent
        # BLPOP is the one command never sent twice (maker_workers/connections.py): a lost notice costs a
        # re-read instead.
        self._waiter = never_twice(client, socket_timeout=config.wait_s + 10)
        self._reconnects = 0  # in a row
        self.book = VoteBook(client)
        self.store = RunStore(client, self.run_id)
        self._started = False
        self.ended_at: float | None = None  # perf_counter() when the last step was committed, before the drain
        self._fresh_after: int | None = None  # see _run
        # Every sample sent and not yet heard of (guesses' and replaced ones included) -> when it was sent.
        self._outstanding: dict[str, float] = {}
        self.spend = Spend(config.max_cost_usd)
        self.depth = Depth(config.speculate, config.speculate_max, config.speculate_waste)
        self.waste = WasteBudget(config.max_waste)
        # When the contests are next looked over for samples presumed lost; until then only the contest a notice
        # touched is (the loop's cost does not grow with the window's depth).
        self._sweep_at = 0.0
        self._hedge_after_s: float | None = None  # None: hedging off, or too few samples have landed yet
        self._dropped: dict[tuple[int, str], int] = {}  # (step, input) of guesses dropped -> samples they drew

    @property
    def started(self) -> bool:
        """Whether the run is recorded in Redis (a refusal before it, such as unfit answer.meanings, leaves none)."""
        return self._started

    @property
    def in_flight(self) -> int:
        """Samples sent and not yet heard of (guesses' and replaced ones included), for monitoring."""
        return len(self._outstanding)

    def run(self, on_commit: Callable[[CommittedStep], None] = lambda _: None) -> JSON:
        """Carry the task out step by step until it is done; returns the last committed state.

        A run id that has a checkpoint is resumed from it: Redis alone holds everything needed.
        Raises StepFailed when the committed step hits a cap: it is failed, never guessed; BudgetSpent
        when the spend reaches the budget; Rejected when the provider refuses the run.
        Samples still in flight at the end are waited for (up to `drain_s`), so the run's counters
        (tokens, cost) include everything the provider served.
        """
        try:
            try:
                state = self._run(on_commit)
            finally:
                self.publisher.close()  # the drain below only listens; a later send opens a new connection
            self.ended_at = time.perf_counter()
            self.store.stop("done")
            self._drain()
            return state
        except (StepFailed, BudgetSpent, Cancelled) as exc:
            self.store.stop(type(exc).__name__.lower())
            self._drain()
            raise
        except BaseException:
            if self._started:  # a run refused before it was recorded leaves nothing behind
                with contextlib.suppress(MakerError):  # a dead Redis or cluster: nothing to tell the workers
                    self.store.stop("ended")
            raise
        finally:
            # Last, after the drain (which renews the lease while it waits): a finished run is free at once.
            with contextlib.suppress(MakerError):  # lapses by itself if Redis is gone
                self.store.release(self._holder)

    def _run(self, on_commit: Callable[[CommittedStep], None]) -> JSON:
        saved = self.start()
        stats = self.store.stats()
        # No sample of this run was ever recorded: a contest past the last one this runner opened is empty in Redis.
        self._fresh_after = -1 if not stats.get("samples") else None
        self.spend.nusd = stats.get("cost_nusd", 0)
        self.waste.priced = self.spend.priced
        self.k = max(self.k, self.store.raised_k() or 0)  # a resumed run keeps what adaptive k raised
        if saved is None:
            step, state, previous = 0, self.task.initial_state(), None
        else:
            step, state, previous = saved.step, saved.state, saved.previous
        window: list[_Open] = []  # window[0] has the committed input; the rest are guesses
        touched: list[_Open] = []  # contests whose view changed since they were last fed
        heard_at = checked_at = time.monotonic()
        warned = False
        while not self.task.done(state, step):
            if self.task.max_steps is not None and step >= self.task.max_steps:
                raise StepFailed(step, f"the task is not done after {step} steps (max_steps {self.task.max_steps})")
            if not window:
                window.append(self._open(step, state, previous))
                touched.append(window[0])
            front = window[0]
            if front.decided:
                committed = self._commit(front)
                self.depth.committed(front.sent)
                self.waste.wasted += max(0, front.sent - committed.samples)  # landing late, or lost
                committed.sent_samples, committed.wasted_samples = self.waste.sent, self.waste.wasted
                self._read_reliability(committed)
                on_commit(committed)
                state, previous, step = committed.next_state, committed.answer, step + 1
                window.pop(0).closed = True
                if len(self._dropped) > 1024:  # guesses dropped behind the committed step never come back
                    self._dropped = {at: n for at, n in self._dropped.items() if at[0] >= step}
                if window and window[0].contest.input_hash != self.task.input_hash(state, step, previous):
                    self._drop(window, 0)  # the guess was built on another input; it must never be committed
                continue
            self._check_caps(front)
            opened = self._speculate(window)
            touched += opened
            now = time.monotonic()
            if now >= self._sweep_at:
                touched = self._sweep(window, now)
            self._send(self._feed(window, touched))
            touched = []
            wake_at = self._sweep_at
            if not opened and window[-1].guess is not None:  # the window cannot grow: the run waits on the front
                ending = len(window) <= self.depth.depth  # not for want of depth: the task ends after the last
                for contest in window if ending else [front]:
                    wake_at = min(wake_at, self._hedge(window, contest, now, 0.25 if ending else 1.0))
            notices = self._next_notices(min(self.config.wait_s, max(0.05, wake_at - now)))
            now = time.monotonic()
            if now - checked_at >= self.config.wait_s:  # also while outcomes flow: one dead worker is enough
                self._health_check()
                self.store.hold(self._holder, self.config.lease_s)  # also: a full Redis fails the run here
                self._timeout_s = self._sample_timeout()
                self._hedge_after_s = self._hedge_after()
                self._sweep_at = 0.0  # a new timeout: look everything over again
                self._forget_unheard(now)
                if self.store.stopped() == "cancelled":
                    raise Cancelled("the run was cancelled; no new samples were sent")
                checked_at = now
            if notices:
                if any(n.outcome is Outcome.SKIPPED for n in notices):
                    self._check_stopped(now)
                heard_at, warned = now, False
                stale, late = False, []
                for notice in notices:
                    routed, fresh = self._route(window, notice)
                    stale = stale or not fresh
                    if routed is not None:
                        touched.append(routed)
                    elif notice.outcome is not Outcome.SKIPPED and self._gone(notice, step):
                        late.append(keys.step(self.run_id, notice.step, notice.input_hash))
                if stale:  # once for the batch: the notices after a stale one are older than what it reads
                    touched = self._reread(window)
                if late:  # a sample that landed after its contest was dropped or committed may have made keys anew
                    self.store.forget(late, self.config.linger_s)
                continue
            touched = self._reread(window)  # a lost notice must cost a re-read, never a hang
            silent = now - heard_at
            if silent >= self.config.stall_warning_s and not warned:
                warned = True  # once per silence: the caller decides whether to go on waiting
                self._on_stall(silent)
        return state

    def _check_stopped(self, now: float) -> None:
        """A worker skipped a sample: its contest was decided (the view here lags), or the run is stopped. The
        second must end the run, not send replacement after replacement: read why (at most twice a second)."""
        if now - self._stop_read_at < 0.5:
            return
        self._stop_read_at = now
        reason = self.store.stopped()
        if reason == "cancelled":
            raise Cancelled("the run was cancelled; no new samples were sent")
        if reason is not None:
            raise Cancelled(
                f"the run's stop flag says {reason!r} while this orchestrator drives it, so the workers skip its "
                "samples; resume the run (--resume RUN_ID) to clear it"
            )

    def start(self) -> Checkpoint | None:
        """Record the run in Redis (or check a resumed one is the same task and k); its checkpoint if any."""
        if not self._started:
            # Before the lease and the record: a refusal leaves nothing behind; a resumed run keeps its rule.
            rule = rule_to_measure(self.store, self.client, self.broker, self.task.semantic)
            self.store.hold(self._holder, self.config.lease_s)  # refused while another orchestrator drives it
            try:
                self.store.start(self.task.definition(), self.config.model_dump())
            except BaseException:  # refused (another task, another k): the run is not this one's to drive
                with contextlib.suppress(MakerError):
                    self.store.release(self._holder)
                raise
            if rule is not None:
                self.store.set_semantic_rule(rule.model_dump_json())
            self._started = True
        return self.store.saved()

    def _commit(self, front: _Open) -> CommittedStep:
        try:
            committed = front.committed(self.task)
        except ConfigError as exc:  # the task cannot build the next state from the winning answer
            raise StepFailed(front.step, str(exc)) from exc
        assert front.known.winner is not None  # committed() checked
        self.store.commit(
            committed.step,
            committed.next_state,
            committed.answer,
            front.contest.keys,
            front.known.winner,
            keep=self.config.keep_tallies,
            rounds=committed.rounds,
            samples=committed.samples,
            linger_s=self.config.linger_s,
        )
        committed.spent_usd = self.spend.spent_usd
        if self.config.trace_samples:
            self._tail = self._tail or Tail(self.client, self.run_id)
            with contextlib.suppress(StoreError):  # the step is committed: its trace line is written all the same
                committed.said = self._tail.take(committed.step, front.contest.input_hash)
        return committed

    def _read_reliability(self, committed: CommittedStep) -> None:
        """The reliability policy's reading of the step; a larger k for the contests opened from now on when
        --adaptive-k asks for one (recorded, so a resumed run keeps it)."""
        needed = self.reliability.observe(committed, self.k)
        if needed is None:
            return
        contest = Contest(run_id=self.run_id, step=committed.step + 1, input_hash="", k=needed)
        p = f"{committed.p_estimate:.6f}"
        self.book.event(contest, "", "k_changed", k=str(needed), previous_k=str(self.k), p=p)
        self.store.raise_k(needed)
        self.k = needed

    def _drain(self) -> None:
        """Wait (a bounded time) for every sample sent to land, so the counters include what it cost; one
        already presumed lost (unheard of past the sample timeout) is not waited for."""
        deadline = time.monotonic() + self.config.drain_s
        while time.monotonic() < deadline:
            alive = time.monotonic() - self._timeout_s
            if not any(sent_at > alive for sent_at in self._outstanding.values()):
                return
            self.store.hold(self._holder, self.config.lease_s)  # the drain may outlast a lease
            self._next_notices()

    def _open(self, step: int, state: JSON, previous: JSON) -> _Open:
        digest = self.task.input_hash(state, step, previous)
        contest = Contest(run_id=self.run_id, step=step, input_hash=digest, k=self.k)
        fresh = self._fresh_after is not None and step > self._fresh_after
        if fresh:
            known = Snapshot()  # nothing to read: one round trip less a step
            self._fresh_after = step
        else:
            # A guess dropped (by this runner or an earlier one) had its keys set to expire: live again, before
            # they are read (read first, they could expire in between and the votes counted be gone).
            self.store.revive(contest.keys, self.config.contest_ttl_s)
            known = self.book.snapshot(contest)  # non-empty when resuming, or when a dropped guess comes back
        if known.k is not None and known.k != contest.k:  # opened before, at another k: it is decided at that one
            contest = contest.model_copy(update={"k": known.k})
        # A dropped guess opened again finds its votes in Redis: what it drew was not wasted after all.
        drew = self._dropped.pop((step, digest), 0)
        self.depth.dropped(-drew)
        self.waste.wasted -= min(drew, known.samples)
        # Its first sample (drawn at T=0) may still be on its way, its votes gone with the keys: no second one.
        return _Open(
            step=step,
            state=state,
            previous=previous,
            contest=contest,
            known=known,
            sent=known.samples,
            fresh=fresh,
            first_sent=drew > 0,
        )

    def _speculate(self, window: list[_Open]) -> list[_Open]:
        """Open guesses up to the speculation depth; returns those opened."""
        opened: list[_Open] = []
        while len(window) <= self.depth.depth and self._room(window) >= 1:
            last = window[-1]
            if last.guess is None:
                break
            try:
                answer = last.known.leading_answer
                state = self.task.next_state(last.state, last.step, last.previous, answer)
                if self.task.done(state, last.step + 1):
                    break
            except (MakerError, ValueError):  # a guess the task cannot even build on is not worth voting ahead of
                break
            last.basis = last.guess
            window.append(self._open(last.step + 1, state, answer))
            opened.append(window[-1])
        return opened

    def _gone(self, notice: Notice, step: int) -> bool:
        """Whether a notice that routes to no open contest is of a dropped guess or a committed step (whose keys,
        made anew by a late sample, are to expire as theirs did)."""
        if self.config.keep_tallies:
            return False
        return notice.step < step or (notice.step, notice.input_hash) in self._dropped

    def _drop(self, window: list[_Open], start: int) -> None:
        """Drop the guesses from window[start] on: what they drew is wasted, and their keys go within a minute
        (a guess that comes back sooner finds its votes)."""
        dropped = window[start:]
        del window[start:]
        for contest in dropped:
            contest.closed = True
            self.depth.dropped(contest.sent)
            self.waste.wasted += contest.sent
            self._dropped[(contest.step, contest.contest.input_hash)] = contest.sent
        self.store.forget([contest.contest.keys for contest in dropped], self.config.linger_s)

    def _see(self, window: list[_Open], i: int, known: Snapshot) -> None:
        """Replace window[i]'s view; the guesses built on its leader are off the path once another leads. A tie
        drops nothing: the leader may well come back, and what was drawn on it would be drawn again."""
        contest = window[i]
        contest.known = known
        if len(window) > i + 1 and contest.guess is not None and contest.guess != contest.basis:
            self._drop(window, i + 1)

    def _route(self, window: list[_Open], notice: Notice) -> tuple[_Open | None, bool]:
        """Apply a notice to its open contest: (that contest, or None for a committed step's or a dropped guess's,
        and False when the notice was stale so the view needs a re-read)."""
        if notice.outcome is Outcome.FATAL:
            raise Rejected(notice.reason or "the provider refused the run")
        self._outcomes[notice.outcome] += 1
        self.spend.hear(notice)
        self.waste.priced = self.spend.priced
        for i, contest in enumerate(window):
            if contest.step == notice.step and contest.contest.input_hash == notice.input_hash:
                contest.hear(notice)
                if notice.outcome is Outcome.SKIPPED:
                    return contest, True  # carries no snapshot
                if notice.snapshot.samples < contest.known.samples:  # an old notice, or the keys expired
                    return contest, False
                self._see(window, i, notice.snapshot)
                return contest, True
        return None, True

    def _reread(self, window: list[_Open]) -> list[_Open]:
        """Replace every open contest's view with what Redis holds now; returns the window."""
        i = 0
        while i < len(window):  # a changed leader drops the guesses after it
            self._see(window, i, self.book.snapshot(window[i].contest))
            i += 1
        return list(window)

    def _feed(self, window: list[_Open], touched: list[_Open]) -> list[tuple[_Open, int, bool]]:
        """(contest, samples it needs now, urgent) for each contest touched; under a waste budget the guesses get
        only what it has room for, nearest first, and every contest is looked at (one held back is fed once
        there is room, touched or not)."""
        front = window[0]
        spare = self._room(window)
        if spare == math.inf:
            fed = {id(contest): contest for contest in touched if not contest.closed}.values()  # each once
            return [(contest, self._top_up(contest), contest is front) for contest in fed]
        batch = [(front, self._top_up(front), True)]
        for contest in window[1:]:
            count = self._top_up(contest, int(spare))
            spare -= count
            batch.append((contest, count, False))
        return batch

    def _room(self, window: list[_Open]) -> float:
        """How many more samples the waste budget lets go out at risk now (inf: no cap). At risk: what is wasted
        if a leader loses, the guesses' samples and the front's hedge."""
        if self.waste.share is None:
            return math.inf
        return self.waste.spare(sum(contest.sent for contest in window[1:]) + int(window[0].hedged))

    def _top_up(self, contest: _Open, most: int | None = None) -> int:
        """How many more samples `contest` needs now, `most` at most (counted as a round when any)."""
        cfg, known = self.config, contest.known
        if contest.decided or known.errors >= cfg.max_errors or known.red_flags >= cfg.max_red_flags:
            return 0  # for the front, _check_caps fails the step; a guess that hit a cap is just not fed
        needed = to_enqueue(contest.contest.k, known.margin, len(contest.in_flight))
        # Never draw past the cap: once the front's samples are all in and it is still undecided, it fails. Sends
        # count too, skipped or lost ones included: no contest is ever sent more than the cap.
        drawn = max(known.samples + len(contest.in_flight), contest.sent)
        needed = min(needed, max(0, cfg.max_samples - drawn))
        if most is not None:
            needed = min(needed, most)
        if needed:
            self.spend.check()  # only where samples would be sent: a step decided within budget commits
            contest.rounds += 1
        return needed

    def _check_caps(self, front: _Open) -> None:
        """Fail the front step at a cap, or early when the model plainly cannot do the task: its first answers all
        red flags, or no answer near half the step's votes (p at or below 0.5: no k helps)."""
        cfg, known = self.config, front.known
        if known.over_cap:
            self._fail(
                front,
                f"the answers spread over {known.candidates} different meanings, the most answer.max_candidates "
                "allows (semantic matching); no answer will lead by k: make the prompt more specific, raise "
                "answer.max_candidates, or lower answer.threshold if paraphrases were kept apart",
            )
        if not self._outcomes[Outcome.VOTE] + self._outcomes[Outcome.DECIDED] and (
            self._outcomes[Outcome.RED_FLAG] >= EARLY_SAMPLES
        ):
            self._fail(
                front,
                f"the model's first {self._outcomes[Outcome.RED_FLAG]} answers were all red-flagged, so it is stopped "
                f"early rather than at a cap; {HOW_TO_CHECK}",
                step=None,
            )
        if known.votes >= EARLY_VOTES and known.leader_votes <= SCATTERED and not known.over_cap:
            self._fail(
                front,
                f"no answer came up more than {known.leader_votes} times in the step's {known.votes} votes: the "
                "model's answers to it do not repeat, so no k margin forms (no k helps), and it is stopped early "
                f"rather than at the cap; {HOW_TO_CHECK}",
            )
        if known.samples >= cfg.max_samples:
            self._fail(
                front,
                f"{known.samples} samples without a {front.contest.k}-vote margin (cap {cfg.max_samples}; "
                f"{known.votes} votes, {known.red_flags} red flags, {known.errors} errors); "
                "raise --max-samples or check the model",
            )
        if front.sent >= cfg.max_samples and not front.in_flight:
            self._fail(
                front,
                f"{front.sent} samples sent (the cap, {cfg.max_samples}) and only {known.samples} recorded: the "
                "rest were skipped by the workers or lost; check that the run is not stopped or driven elsewhere "
                "(`maker status RUN_ID`)",
            )
        if known.errors >= cfg.max_errors:
            raise StepFailed(
                front.step,
                f"{known.errors} provider calls failed (cap {cfg.max_errors}), the last with: {front.last_error}",
            )
        if known.red_flags >= cfg.max_red_flags:
            self._fail(front, f"{known.red_flags} red-flagged answers (cap {cfg.max_red_flags})")

    def _fail(self, front: _Open, why: str, step: int | None = -1) -> NoReturn:
        """Fail the front step, saying what the model said: the commonest red flag (of the step, or of the run with
        `step=None`) and one answer that had it."""
        try:  # on the client that never retries: a Redis that is gone must not hold up the failure
            flags = thrown(self._waiter, self.run_id, front.step if step == -1 else step)
        except StoreError:
            flags = None
        raise StepFailed(front.step, f"{why}; {flags}" if flags else why)

    def _send(self, batch: list[tuple[_Open, int, bool]]) -> None:
        """(contest, how many more samples, urgent), sent in one batch. The run waits on a contest's first sample
        (the next guess is built on it) and on an urgent one's (the front: it is committed next): those go ahead
        of the others in the broker's queue, or a deep window's backlog would stand between every step and the
        next."""
        requests = []
        for contest, count, urgent in batch:
            requests += self._requests(contest, count, urgent)
        if not requests:
            return
        self.publisher.send_many([(request, argsrepr, priority) for _, request, argsrepr, priority in requests])
        self.waste.sent += len(requests)
        sent_at = time.monotonic()
        for contest, request, _, _ in requests:
            self._outstanding[request.sample_id] = contest.in_flight[request.sample_id] = sent_at
        self._sweep_at = min(self._sweep_at, sent_at + self._timeout_s)  # the soonest one can be presumed lost

    def _requests(self, contest: _Open, count: int, urgent: bool) -> list[tuple[_Open, SampleRequest, str, int]]:
        requests = []
        for sent in range(contest.sent, contest.sent + count):
            first = sent == 0 and not contest.first_sent
            request = SampleRequest(
                run_id=self.run_id,
                step=contest.step,
                input_hash=contest.contest.input_hash,
                state=contest.state,
                previous=contest.previous,
                sample_id=self._sample_prefix + uuid.uuid4().hex[8:],
                # A contest's first sample is drawn at T=first_temperature. One this runner may have sent before (a
                # guess it dropped and opens again) sends none; one an earlier runner may have opened (a resumed
                # run) asks Redis for the T=0 claim first, and is drawn at the later temperature if another holds it.
                temperature=self.config.first_temperature if first else self.config.later_temperature,
                first=first,
                later_temperature=self.config.later_temperature,
                k=contest.contest.k,
                may_be_decided=sent >= contest.contest.k or contest.known.samples > 0 or not contest.fresh,
                member=contest.step + sent,
            )
            priority = URGENT if urgent or sent == 0 else LATER
            requests.append((contest, request, f"run={self.run_id} step={contest.step}", priority))
        contest.sent += count
        return requests

    def _sweep(self, window: list[_Open], now: float) -> list[_Open]:
        """Forget the samples presumed lost in every contest, and set when to look again: when the next sample
        in flight would be presumed lost, so that its replacement goes out then, not at the next wait_s.
        Returns the window, every contest of which is to be fed."""
        lost_at = now + self.config.wait_s
        for contest in window:
            self._forget_lost(contest)
            for sent_at in contest.in_flight.values():
                lost_at = min(lost_at, self._lost_at(contest, sent_at))
        self._sweep_at = lost_at
        return list(window)

    def _next_notices(self, wait_s: float | None = None) -> list[Notice]:
        """The next notice, waited for up to `wait_s`, and every other one already there (up to a batch): at a
        high rate one wake-up hears of many samples. Empty when none came, or when a reply was lost."""
        notify = keys.notify(self.run_id)
        try:
            with store_errors("waiting for outcomes"):
                timeout = round(wait_s or self.config.wait_s, 3)
                popped = self._waiter.blpop([notify], timeout=timeout)
                if popped is None:
                    return []
                with self._waiter.pipeline(transaction=True) as pipe:
                    more, _ = pipe.lrange(notify, 0, NOTICE_BATCH - 2).ltrim(notify, NOTICE_BATCH - 1, -1).execute()
        except StoreError as exc:
            if not isinstance(exc.__cause__, (redis.ConnectionError, redis.TimeoutError)):
                raise
            self._reconnect(exc)
            return []  # what the lost reply carried, the re-read that follows finds in the contests
        self._reconnects = 0
        return [self._heard(raw) for raw in (popped[1], *more)]

    def _heard(self, raw: bytes) -> Notice:
        notice = Notice.model_validate_json(raw)
        if not notice.sample_id.startswith(self._sample_prefix):
            # Not this runner's: a sample of an earlier, ended attempt at the run. What it said of the
            # provider (a refusal, an unknown price) may since have been fixed; its counts are in Redis.
            outcome = Outcome.ERROR if notice.outcome is Outcome.FATAL else notice.outcome
            notice = notice.model_copy(update={"outcome": outcome, "cost_unknown": None})
        sent_at = self._outstanding.pop(notice.sample_id, None)  # heard of, whatever happens to the notice next
        if sent_at is not None:  # every sample's latency, the slow ones of closed contests included
            self._latencies.append(time.monotonic() - sent_at)
            self._landed_sent_at = max(self._landed_sent_at, sent_at)
        return notice

    def _hedge_after(self) -> float | None:
        """How long the run waits on its front contest's samples before it sends one more: twice the median
        latency. Off without speculation (which asks for the fewest samples), and until 20 samples have landed."""
        if self.config.speculate == 0 or len(self._latencies) < 20:
            return None
        return 2 * sorted(self._latencies)[len(self._latencies) // 2]

    def _hedge(self, window: list[_Open], contest: _Open, now: float, sooner: float = 1.0) -> float:
        """While the run waits on `contest` (the front when the window cannot grow; every contest once the task
        ends after the window), one extra sample once its oldest has been out `_hedge_after_s`: whichever lands
        first counts, so one slow straggler no longer holds every step behind it. Returns when to look again."""
        if self._hedge_after_s is None or contest.hedged or contest.decided or not contest.in_flight:
            return now + self.config.wait_s
        due = min(contest.in_flight.values()) + self._hedge_after_s * sooner
        if due > now:
            return due
        if self._room(window) < 1:
            return now + self.config.wait_s  # the waste budget has no room for it (yet)
        contest.hedged = True
        self.spend.check()  # a hedge is a sample like any other: it is paid for
        self._send([(contest, 1, True)])
        return now + self.config.wait_s

    def _sample_timeout(self) -> float:
        """A few times the recent p99 latency (send to outcome, queueing included), within the floor and
        the cap: a message the broker lost costs seconds, while slow models and long rate-limit waits
        still get their time. While few samples have landed, which say little of the tail, twice as many
        times their slowest; the cap alone until one has."""
        cfg, seen = self.config, sorted(self._latencies)
        if not seen:
            return cfg.sample_timeout_s
        if len(seen) >= 20:
            slow, times = seen[int(0.99 * (len(seen) - 1))], 4  # the p99
        else:
            slow, times = seen[-1], 8  # the slowest
        return min(cfg.sample_timeout_s, max(cfg.sample_timeout_floor_s, times * slow))

    def _reconnect(self, exc: StoreError) -> None:
        """Back off before the next wait, and say so when it goes on: Redis restarting is worth a line."""
        self._reconnects += 1
        if self._reconnects == 3:
            self._on_warning(f"{exc}; reconnecting to Redis (waiting for outcomes)")
        time.sleep(min(0.05 * 2**self._reconnects, 2.0))

    def _lost_at(self, contest: _Open, sent_at: float) -> float:
        """When a sample still unheard of is presumed lost. Soon (the sample timeout) when a sample sent after
        it has landed: it was overtaken, so lost. Otherwise nothing is landing at all (the workers stalled, or
        every sample in flight was lost): then later each time, so a stall does not flood the queue with
        replacements of replacements."""
        if sent_at < self._landed_sent_at:
            return sent_at + self._timeout_s
        return sent_at + min(self.config.sample_timeout_s, self._timeout_s * contest.patience)

    def _forget_unheard(self, now: float) -> None:
        """Samples unheard of for longer than the timeout's cap are not waited for, even by the drain: forgotten,
        so that what the orchestrator holds does not grow with the run."""
        unheard = now - self.config.sample_timeout_s
        for sample_id in [s for s, sent_at in self._outstanding.items() if sent_at < unheard]:
            del self._outstanding[sample_id]

    def _forget_lost(self, contest: _Open) -> None:
        """Samples presumed lost (`_lost_at`) are dropped from the contest's view, so new ones replace them.

        Should a lost one turn up after all, its vote still counts once: Redis dedupes by sample id.
        """
        now = time.monotonic()
        lost = [s for s, sent_at in contest.in_flight.items() if self._lost_at(contest, sent_at) <= now]
        if any(contest.in_flight[s] >= self._landed_sent_at for s in lost):
            contest.patience *= 2
        for sample_id in lost:
            # Still outstanding: if it lands after all, it is this run's (a refusal ends the run) and its
            # latency counts, so a provider that slowed down raises the timeout; a lost one never lands.
            del contest.in_flight[sample_id]
