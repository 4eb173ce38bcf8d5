"""The one door to the vote script: record a sample's outcome atomically and get a typed answer."""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from typing import Literal

import redis
from pydantic import BaseModel

from maker_workers import keys
from maker_workers.errors import store_errors

_SOURCE = resources.files("maker_workers").joinpath("lua/record_sample.lua").read_text()


class Outcome(StrEnum):
    DUPLICATE = "duplicate"
    LATE = "late"
    VOTE = "vote"
    DECIDED = "decided"
    RED_FLAG = "red_flag"
    ERROR = "error"


class Recorded(BaseModel):
    outcome: Outcome
    leader_votes: int
    runner_up_votes: int


class StepCounts(BaseModel):
    """A contest's counters, as the vote script keeps them."""

    samples: int = 0
    votes: int = 0
    red_flags: int = 0
    errors: int = 0


class Notice(StepCounts):
    """One message the script pushes on the run's notify list."""

    sample_id: str
    step: int
    input_hash: str
    outcome: Outcome
    leader_votes: int = 0
    runner_up_votes: int = 0
    leader: str | None = None
    winner: str | None = None
    reason: str | None = None


class StepStatus(StepCounts):
    """What Redis knows of one contest, for an orchestrator that (re)joins it."""

    decided: bool = False
    leader: str | None = None
    winner: str | None = None
    winner_votes: int = 0
    runner_up_votes: int = 0
    margin: int = 0


class Contest(BaseModel):
    """Where a sample belongs: one run, one step, one exact input (state and previous move)."""

    run_id: str
    step: int
    input_hash: str
    k: int


class VoteBook:
    """Records samples with the Lua script, registered once per client."""

    def __init__(self, client: redis.Redis, *, events_maxlen: int = 100_000, contest_ttl_s: int = 3_600):
        self._client = client
        self._script = client.register_script(_SOURCE)
        self._events_maxlen = events_maxlen
        self._contest_ttl_s = contest_ttl_s

    def record(
        self,
        contest: Contest,
        sample_id: str,
        kind: Literal["vote", "red_flag", "error"],
        value: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> Recorded:
        step = keys.step(contest.run_id, contest.step, contest.input_hash)
        run = contest.run_id
        with store_errors(f"recording sample {sample_id}"):
            outcome, leader, runner_up = self._script(
                keys=[step.seen, step.tally, step.status, keys.notify(run), keys.events(run), keys.stats(run)],
                args=[
                    sample_id,
                    kind,
                    value,
                    contest.k,
                    contest.step,
                    contest.input_hash,
                    input_tokens,
                    output_tokens,
                    self._events_maxlen,
                    self._contest_ttl_s,
                ],
            )
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        return Recorded(outcome=Outcome(outcome), leader_votes=leader, runner_up_votes=runner_up)

    def event(self, contest: Contest, sample_id: str, kind: str, **fields: str) -> None:
        """An event the script does not write itself (skips, retries, rate-limit waits)."""
        entry = {"step": contest.step, "input": contest.input_hash, "sample": sample_id, "kind": kind, **fields}
        with store_errors(f"writing a {kind} event"):
            self._client.xadd(keys.events(contest.run_id), entry, maxlen=self._events_maxlen, approximate=True)

    def note_temperature_omitted(self, contest: Contest, sample_id: str) -> None:
        """The run's report says when samples were drawn at the model's own temperature."""
        with store_errors("noting the omitted temperature"):
            first = self._client.hsetnx(keys.stats(contest.run_id), "temperature_omitted", 1)
        if first:
            self.event(contest, sample_id, "temperature_omitted")

    def status(self, contest: Contest) -> StepStatus:
        step = keys.step(contest.run_id, contest.step, contest.input_hash)
        with store_errors(f"reading step {contest.step}"), self._client.pipeline(transaction=True) as pipe:
            raw, tally = pipe.hgetall(step.status).hgetall(step.tally).execute()
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        ranked = sorted(((int(n), c.decode()) for c, n in tally.items()), reverse=True)
        counts = [n for n, _ in ranked] + [0, 0]
        margin = counts[0] - counts[1]
        return StepStatus(
            decided=fields.pop("decided", "0") == "1",
            margin=margin,
            leader=ranked[0][1] if margin > 0 else None,
            **{k: v for k, v in fields.items() if k in StepStatus.model_fields},
        )

    def is_decided(self, contest: Contest) -> bool:
        status = keys.step(contest.run_id, contest.step, contest.input_hash).status
        with store_errors(f"reading step {contest.step}"):
            return self._client.hget(status, "decided") in (b"1", "1")
