"""The run loop: keep enough samples in flight, wait for outcomes, commit, checkpoint.

The orchestrator holds no vote in memory that Redis does not also hold: tallies and decisions live
in Redis (written by the workers' Lua script), the committed state is checkpointed after every step.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import redis
from celery import Celery
from pydantic import BaseModel, Field, model_validator

from maker_workers import keys
from maker_workers.celery_app import SAMPLE_TASK
from maker_workers.domains import hanoi
from maker_workers.errors import ConfigError, StepFailed, StoreError
from maker_workers.sampling import SampleRequest
from maker_workers.votes import Contest, Notice, Outcome, StepStatus, VoteBook
from orchestrator.method import to_enqueue


class VotingConfig(BaseModel):
    k: int = Field(3, ge=1, description="margin the winner needs over the runner-up")
    max_samples: int = Field(200, ge=1, description="a step that draws this many samples undecided FAILS")
    max_red_flags: int = Field(100, ge=1, description="a step with this many red flags FAILS")
    first_temperature: float = 0.0
    later_temperature: float = 0.1
    sample_timeout_s: float = Field(300.0, gt=0, description="a sample not heard of by then is replaced")
    wait_s: float = Field(2.0, gt=0, description="longest blocking wait before checking the cluster's health")

    @model_validator(mode="after")
    def _cap_allows_a_decision(self) -> VotingConfig:
        if self.max_samples < self.k:
            raise ValueError(f"max_samples ({self.max_samples}) is below k ({self.k}): no step could ever be decided")
        return self


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
    ) -> None:
        self.client = client
        self.broker = broker
        self.config = config
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._health_check = health_check
        self.book = VoteBook(client)

    def run(
        self, disks: int, on_commit: Callable[[CommittedStep], None] = lambda _: None
    ) -> hanoi.State:
        """Solve `disks`-disk Hanoi step by step; returns the last committed state.

        A run id that has a checkpoint is resumed from it: Redis alone holds everything needed.
        """
        start, state, previous = self._start(disks)
        for step in range(start, hanoi.n_steps(disks)):
            committed = self.decide(step, state, previous)
            state, previous = committed.next_state, committed.move
            self._checkpoint(committed)
            on_commit(committed)
        return state

    def _start(self, disks: int) -> tuple[int, hanoi.State, hanoi.Move | None]:
        try:
            meta = self.client.hgetall(keys.meta(self.run_id))
            saved = self.client.hgetall(keys.checkpoint(self.run_id))
            if not meta:
                self.client.hset(keys.meta(self.run_id), mapping={
                    "disks": disks, "config": self.config.model_dump_json(), "started": time.time()})
        except redis.RedisError as exc:
            raise StoreError(f"reading run {self.run_id} failed: {exc}") from exc
        if meta and int(meta[b"disks"]) != disks:
            raise ConfigError(f"run {self.run_id} has {int(meta[b'disks'])} disks, not {disks}")
        if not saved:
            return 0, hanoi.initial_state(disks), None
        previous = json.loads(saved[b"previous_move"])
        return int(saved[b"step"]), json.loads(saved[b"state"]), None if previous is None else tuple(previous)

    def _checkpoint(self, committed: CommittedStep) -> None:
        """The committed state, and the move appended to the run's move log, in one transaction."""
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(keys.checkpoint(self.run_id), mapping={
                    "step": committed.step + 1, "state": json.dumps(committed.next_state),
                    "previous_move": json.dumps(committed.move),
                })
                pipe.rpush(keys.moves(self.run_id), json.dumps(committed.move))
                pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"checkpointing step {committed.step} failed: {exc}") from exc

    def committed_moves(self) -> list[hanoi.Move]:
        """Every move committed so far, from Redis (what a resumed run's scorer replays)."""
        return [tuple(json.loads(m)) for m in self.client.lrange(keys.moves(self.run_id), 0, -1)]

    def decide(self, step: int, state: hanoi.State, previous: hanoi.Move | None) -> CommittedStep:
        """Vote one step to a decision, or raise StepFailed when a cap is hit."""
        cfg = self.config
        contest = Contest(run_id=self.run_id, step=step, input_hash=hanoi.input_hash(state, previous), k=cfg.k)
        known = self.book.status(contest)  # non-empty only when resuming a step already under way
        if known.decided:
            return self._committed(step, known.winner, known.winner_votes, known.runner_up_votes, known, 0)
        in_flight: dict[str, float] = {}
        margin, sent, rounds = known.margin, known.samples, 0
        while True:
            needed = to_enqueue(cfg.k, margin, len(in_flight))
            if needed:
                rounds += 1
                for _ in range(needed):
                    temperature = cfg.first_temperature if sent == 0 else cfg.later_temperature
                    in_flight[self._send(step, state, previous, temperature)] = time.monotonic()
                    sent += 1
            notice = self._next_notice()
            if notice is None:
                self._health_check()
                self._forget_lost(in_flight)
                continue
            if notice.step != step or notice.input_hash != contest.input_hash:
                continue  # a late outcome from an earlier step
            in_flight.pop(notice.sample_id, None)
            if notice.outcome is Outcome.DECIDED:
                return self._committed(step, notice.winner, notice.leader_votes, notice.runner_up_votes, notice,
                                       rounds)
            if notice.outcome is Outcome.VOTE:
                margin = notice.leader_votes - notice.runner_up_votes
            if notice.samples >= cfg.max_samples:
                raise StepFailed(step, f"{notice.samples} samples without a {cfg.k}-vote margin "
                                 f"(cap {cfg.max_samples}); raise --max-samples or check the model")
            if notice.red_flags >= cfg.max_red_flags:
                raise StepFailed(step, f"{notice.red_flags} red-flagged answers (cap {cfg.max_red_flags}); "
                                 "the model's answers do not parse, see the run's events")

    @staticmethod
    def _committed(step: int, winner: str | None, winner_votes: int, runner_up_votes: int,
                   counts: Notice | StepStatus, rounds: int) -> CommittedStep:
        if winner is None:
            raise StoreError(f"step {step} is decided but Redis holds no winner")
        move, next_state = hanoi.from_candidate(winner)
        return CommittedStep(
            step=step, move=move, next_state=next_state, samples=counts.samples, votes=counts.votes,
            winner_votes=winner_votes, runner_up_votes=runner_up_votes, red_flags=counts.red_flags, rounds=rounds,
        )

    def _send(self, step: int, state: hanoi.State, previous: hanoi.Move | None, temperature: float) -> str:
        sample_id = uuid.uuid4().hex
        request = SampleRequest(
            run_id=self.run_id, step=step, state=state, previous_move=previous,
            sample_id=sample_id, temperature=temperature, k=self.config.k,
        )
        # An explicit argsrepr spares Celery a saferepr of the whole state, and reads well in Flower.
        self.broker.send_task(SAMPLE_TASK, args=[request.model_dump(mode="json")], task_id=sample_id,
                              argsrepr=f"run={self.run_id} step={step}")
        return sample_id

    def _next_notice(self) -> Notice | None:
        try:
            popped = self.client.blpop([keys.notify(self.run_id)], timeout=self.config.wait_s)
        except redis.RedisError as exc:
            raise StoreError(f"waiting for outcomes failed: {exc}") from exc
        return None if popped is None else Notice.model_validate_json(popped[1])

    def _forget_lost(self, in_flight: dict[str, float]) -> None:
        """Samples unheard of for too long are presumed lost; dropping them lets new ones replace them.

        Should a lost one turn up after all, its vote still counts once: Redis dedupes by sample id.
        """
        deadline = time.monotonic() - self.config.sample_timeout_s
        for sample_id in [s for s, sent_at in in_flight.items() if sent_at < deadline]:
            del in_flight[sample_id]

    def _write(self, key: str, mapping: dict[str, str | int]) -> None:
        try:
            self.client.hset(key, mapping=mapping)
        except redis.RedisError as exc:
            raise StoreError(f"writing {key} failed: {exc}") from exc

    def stats(self) -> dict[str, int]:
        raw = self.client.hgetall(keys.stats(self.run_id))
        return {k.decode(): int(v) for k, v in raw.items()}
