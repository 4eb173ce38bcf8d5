"""The run loop: keep enough samples in flight, wait for outcomes, commit, checkpoint.

The orchestrator holds no vote in memory that Redis does not also hold: tallies and decisions live
in Redis (written by the workers' Lua script), the committed state is checkpointed after every step.

Speculation (`speculate` > 0) hides model latency: while step i is voted on, steps i+1.. are voted on
too, each with the input the leading answer of the step before would give. Every contest is keyed by its
exact input, so a guess that loses costs only its samples; it can never add a vote to another input,
and each committed step is still decided ahead-by-k among samples of exactly its committed input.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from celery import Celery
from pydantic import BaseModel, Field, model_validator

from maker_workers import keys
from maker_workers.celery_app import SAMPLE_TASK
from maker_workers.domains import hanoi
from maker_workers.errors import ConfigError, StepFailed, StoreError, store_errors
from maker_workers.sampling import SampleRequest
from maker_workers.votes import Contest, Notice, Outcome, StepStatus, VoteBook
from orchestrator.method import to_enqueue


class VotingConfig(BaseModel):
    k: int = Field(3, ge=1, description="margin the winner needs over the runner-up")
    max_samples: int = Field(200, ge=1, description="a step that draws this many samples undecided FAILS")
    max_red_flags: int = Field(100, ge=1, description="a step with this many red flags FAILS")
    max_errors: int = Field(20, ge=1, description="a step whose provider calls fail this often FAILS")
    first_temperature: float = 0.0
    later_temperature: float = 0.1
    sample_timeout_s: float = Field(300.0, gt=0, description="a sample not heard of by then is replaced")
    wait_s: float = Field(2.0, gt=0, description="longest blocking wait before checking the cluster's health")
    stall_warning_s: float = Field(30.0, gt=0, description="silence from every worker this long is reported")
    speculate: int = Field(0, ge=0, description="steps to vote on ahead of the committed one, on the leading answer")

    @model_validator(mode="after")
    def _cap_allows_a_decision(self) -> VotingConfig:
        if self.max_samples < self.k:
            raise ValueError(f"max_samples ({self.max_samples}) is below k ({self.k}): no step could ever be decided")
        return self


class Checkpoint(BaseModel):
    step: int  # the next step to decide
    state: hanoi.State
    previous_move: hanoi.Move | None


class CommittedStep(BaseModel):
    step: int
    move: hanoi.Move
    next_state: hanoi.State
    samples: int
    votes: int
    winner_votes: int
    runner_up_votes: int
    red_flags: int
    rounds: int


@dataclass
class _Open:
    """The orchestrator's view of one contest it feeds samples to; Redis holds the truth."""

    step: int
    state: hanoi.State
    previous: hanoi.Move | None
    contest: Contest
    known: StepStatus
    sent: int
    in_flight: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    last_error: str | None = None

    @property
    def decided(self) -> bool:
        return self.known.decided

    @property
    def guess(self) -> str | None:
        """The answer the next step's guess builds on: the winner, else the current leader."""
        return self.known.winner or self.known.leader

    def absorb(self, notice: Notice) -> None:
        self.in_flight.pop(notice.sample_id, None)
        known = self.known
        known.samples, known.votes, known.red_flags = notice.samples, notice.votes, notice.red_flags
        known.errors = notice.errors
        if notice.outcome is Outcome.ERROR:
            self.last_error = notice.reason
        if notice.outcome in (Outcome.VOTE, Outcome.DECIDED):
            known.margin = notice.leader_votes - notice.runner_up_votes
            known.leader = notice.leader if known.margin > 0 else None
        if notice.outcome is Outcome.DECIDED:
            known.decided, known.winner = True, notice.winner
            known.winner_votes, known.runner_up_votes = notice.leader_votes, notice.runner_up_votes

    def committed(self) -> CommittedStep:
        if self.known.winner is None:
            raise StoreError(f"step {self.step} is decided but Redis holds no winner")
        move, next_state = hanoi.from_candidate(self.known.winner)
        known = self.known
        return CommittedStep(
            step=self.step,
            move=move,
            next_state=next_state,
            samples=known.samples,
            votes=known.votes,
            winner_votes=known.winner_votes,
            runner_up_votes=known.runner_up_votes,
            red_flags=known.red_flags,
            rounds=self.rounds,
        )


class Runner:
    """Drives one run of the Hanoi task through the cluster behind `broker` and `client`."""

    def __init__(
        self,
        client: redis.Redis,
        broker: Celery,
        config: VotingConfig,
        *,
        run_id: str | None = None,
        health_check: Callable[[], None] = lambda: None,
        on_stall: Callable[[float], None] = lambda _: None,
    ) -> None:
        self.client = client
        self.broker = broker
        self.config = config
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._health_check = health_check
        self._on_stall = on_stall
        self.book = VoteBook(client)

    def run(self, disks: int, on_commit: Callable[[CommittedStep], None] = lambda _: None) -> hanoi.State:
        """Solve `disks`-disk Hanoi step by step; returns the last committed state.

        A run id that has a checkpoint is resumed from it: Redis alone holds everything needed.
        Raises StepFailed when the committed step hits a cap: it is failed, never guessed.
        """
        step, state, previous = self._start(disks)
        total = hanoi.n_steps(disks)
        window: list[_Open] = []  # window[0] has the committed input; the rest are guesses
        heard_at = checked_at = time.monotonic()
        warned = False
        while step < total:
            if not window:
                window.append(self._open(step, state, previous))
            front = window[0]
            if front.decided:
                committed = front.committed()
                self._checkpoint(committed)
                on_commit(committed)
                state, previous, step = committed.next_state, committed.move, step + 1
                window.pop(0)
                continue
            self._check_caps(front)
            self._speculate(window, total)
            for contest in window:
                self._forget_lost(contest.in_flight)
                self._top_up(contest)
            notice = self._next_notice()
            now = time.monotonic()
            if now - checked_at >= self.config.wait_s:  # also while outcomes flow: one dead worker is enough
                self._health_check()
                checked_at = now
            if notice is not None:
                heard_at, warned = now, False
                self._route(window, notice)
                continue
            silent = now - heard_at
            if silent >= self.config.stall_warning_s and not warned:
                warned = True  # once per silence: the caller decides whether to go on waiting
                self._on_stall(silent)
        return state

    def _open(self, step: int, state: hanoi.State, previous: hanoi.Move | None) -> _Open:
        contest = Contest(run_id=self.run_id, step=step, input_hash=hanoi.input_hash(state, previous), k=self.config.k)
        known = self.book.status(contest)  # non-empty when resuming, or when a dropped guess comes back
        return _Open(step=step, state=state, previous=previous, contest=contest, known=known, sent=known.samples)

    def _speculate(self, window: list[_Open], total: int) -> None:
        while len(window) <= self.config.speculate:
            last = window[-1]
            if last.guess is None or last.step + 1 >= total:
                return
            move, next_state = hanoi.from_candidate(last.guess)
            window.append(self._open(last.step + 1, next_state, move))

    @staticmethod
    def _route(window: list[_Open], notice: Notice) -> None:
        for i, contest in enumerate(window):
            if contest.step == notice.step and contest.contest.input_hash == notice.input_hash:
                guess = contest.guess
                contest.absorb(notice)
                if contest.guess != guess:
                    del window[i + 1 :]  # the guesses built on the old leader are off the path now
                return
        # otherwise: a late outcome of a committed step or of a dropped guess

    def _top_up(self, contest: _Open) -> None:
        if contest.decided:
            return
        cfg = self.config
        needed = to_enqueue(cfg.k, contest.known.margin, len(contest.in_flight))
        # Never draw past the cap: once the front's samples are all in and it is still undecided, it fails.
        needed = min(needed, max(0, cfg.max_samples - contest.known.samples - len(contest.in_flight)))
        if needed:
            contest.rounds += 1
            for _ in range(needed):
                temperature = cfg.first_temperature if contest.sent == 0 else cfg.later_temperature
                contest.in_flight[self._send(contest, temperature)] = time.monotonic()
                contest.sent += 1

    def _check_caps(self, front: _Open) -> None:
        cfg, known = self.config, front.known
        if known.samples >= cfg.max_samples:
            raise StepFailed(
                front.step,
                f"{known.samples} samples without a {cfg.k}-vote margin (cap {cfg.max_samples}; "
                f"{known.votes} votes, {known.red_flags} red flags, {known.errors} errors); "
                "raise --max-samples or check the model",
            )
        if known.errors >= cfg.max_errors:
            raise StepFailed(
                front.step,
                f"{known.errors} provider calls failed (cap {cfg.max_errors}), the last with: {front.last_error}",
            )
        if known.red_flags >= cfg.max_red_flags:
            raise StepFailed(
                front.step,
                f"{known.red_flags} red-flagged answers (cap {cfg.max_red_flags}); "
                "the model's answers do not parse, see the run's events",
            )

    def exists(self) -> bool:
        """Whether Redis knows this run id (a run to resume)."""
        with store_errors(f"looking up run {self.run_id}"):
            return self.client.exists(keys.meta(self.run_id)) == 1

    def saved(self) -> Checkpoint | None:
        """The last checkpoint of this run, if it has committed a step."""
        with store_errors(f"reading the checkpoint of run {self.run_id}"):
            raw = self.client.hgetall(keys.checkpoint(self.run_id))
        if not raw:
            return None
        previous = json.loads(raw[b"previous_move"])
        return Checkpoint(
            step=int(raw[b"step"]),
            state=json.loads(raw[b"state"]),
            previous_move=None if previous is None else tuple(previous),
        )

    def _start(self, disks: int) -> tuple[int, hanoi.State, hanoi.Move | None]:
        with store_errors(f"starting run {self.run_id}"):
            meta = self.client.hgetall(keys.meta(self.run_id))
            if not meta:
                mapping = {"disks": disks, "config": self.config.model_dump_json(), "started": time.time()}
                self.client.hset(keys.meta(self.run_id), mapping=mapping)
        if meta and int(meta[b"disks"]) != disks:
            raise ConfigError(f"run {self.run_id} has {int(meta[b'disks'])} disks, not {disks}")
        saved = self.saved()
        if saved is None:
            return 0, hanoi.initial_state(disks), None
        return saved.step, saved.state, saved.previous_move

    def _checkpoint(self, committed: CommittedStep) -> None:
        """The committed state, and the move appended to the run's move log, in one transaction."""
        with store_errors(f"checkpointing step {committed.step}"), self.client.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.checkpoint(self.run_id),
                mapping={
                    "step": committed.step + 1,
                    "state": json.dumps(committed.next_state),
                    "previous_move": json.dumps(committed.move),
                },
            )
            pipe.rpush(keys.moves(self.run_id), json.dumps(committed.move))
            pipe.execute()

    def committed_moves(self) -> list[hanoi.Move]:
        """Every move committed so far, from Redis (what a resumed run's scorer replays)."""
        with store_errors(f"reading the moves of run {self.run_id}"):
            raw = self.client.lrange(keys.moves(self.run_id), 0, -1)
        return [tuple(json.loads(m)) for m in raw]

    def _send(self, contest: _Open, temperature: float) -> str:
        sample_id = uuid.uuid4().hex
        request = SampleRequest(
            run_id=self.run_id,
            step=contest.step,
            state=contest.state,
            previous_move=contest.previous,
            sample_id=sample_id,
            temperature=temperature,
            k=self.config.k,
            may_be_decided=contest.sent >= self.config.k or contest.known.samples > 0,
        )
        # An explicit argsrepr spares Celery a saferepr of the whole state, and reads well in Flower.
        self.broker.send_task(
            SAMPLE_TASK,
            args=[request.model_dump(mode="json")],
            task_id=sample_id,
            argsrepr=f"run={self.run_id} step={contest.step}",
        )
        return sample_id

    def _next_notice(self) -> Notice | None:
        with store_errors("waiting for outcomes"):
            popped = self.client.blpop([keys.notify(self.run_id)], timeout=self.config.wait_s)
        return None if popped is None else Notice.model_validate_json(popped[1])

    def _forget_lost(self, in_flight: dict[str, float]) -> None:
        """Samples unheard of for too long are presumed lost; dropping them lets new ones replace them.

        Should a lost one turn up after all, its vote still counts once: Redis dedupes by sample id.
        """
        deadline = time.monotonic() - self.config.sample_timeout_s
        for sample_id in [s for s, sent_at in in_flight.items() if sent_at < deadline]:
            del in_flight[sample_id]

    def stats(self) -> dict[str, int]:
        """The run's counters as the vote script keeps them (samples, red flags by reason, tokens...)."""
        with store_errors(f"reading the stats of run {self.run_id}"):
            raw = self.client.hgetall(keys.stats(self.run_id))
        return {k.decode(): int(v) for k, v in raw.items()}
