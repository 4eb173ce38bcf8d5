"""The one door to the vote script: record a sample's outcome atomically and get a typed answer.

The script owns each contest's ranking; `Snapshot` is its whole state, carried by every notice and
read back by `VoteBook.snapshot`, so no Python code ever ranks votes.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from importlib import resources
from typing import Any, Literal

import redis
from pydantic import BaseModel
from redis.commands.core import Script

from maker_workers import keys
from maker_workers.domains.answers import MEMBERS_KEPT
from maker_workers.errors import store_errors

_SOURCE = resources.files("maker_workers").joinpath("lua/record_sample.lua").read_text()
_CLAIM_FIRST = resources.files("maker_workers").joinpath("lua/claim_first.lua").read_text()
# Semantic contests run the same script after the prelude that assigns a vote to its candidate.
_SEMANTIC_SOURCE = resources.files("maker_workers").joinpath("lua/semantic.lua").read_text() + _SOURCE


class Outcome(StrEnum):
    DUPLICATE = "duplicate"
    LATE = "late"
    VOTE = "vote"
    DECIDED = "decided"
    RED_FLAG = "red_flag"
    ERROR = "error"
    FATAL = "fatal"  # the provider refused in a way no retry fixes: the run ends
    SKIPPED = "skipped"  # the worker found the step decided and did not call the model


class Recorded(BaseModel):
    outcome: Outcome
    leader_votes: int
    runner_up_votes: int
    reason: str | None = None  # a red flag's or an error's, as recorded


class Snapshot(BaseModel):
    """A contest's whole state as the vote script keeps it. `samples` only grows: it orders snapshots."""

    decided: bool = False
    leader: str | None = None  # the vote key with most votes (the first to reach that count)
    leader_payload: str | None = None  # its payload, when that is not the key itself
    leader_votes: int = 0
    runner_up_votes: int = 0
    winner: str | None = None
    samples: int = 0
    votes: int = 0
    red_flags: int = 0
    errors: int = 0
    late: int = 0
    candidates: int = 0  # semantic contests: the candidates opened so far
    over_cap: int = 0  # semantic contests: votes refused because max_candidates were open
    k: int | None = None  # the margin the contest is decided at: fixed by its first sample
    copies: int = 0  # votes whose text was byte-identical to one already counted here (they still count)
    winner_distinct: int | None = None  # once decided: the different texts among the winner's votes

    @property
    def margin(self) -> int:
        return self.leader_votes - self.runner_up_votes

    @property
    def leading_answer(self) -> Any:
        """The leader's payload (a JSON value), or None without a leader."""
        if self.leader is None:
            return None
        return json.loads(self.leader_payload if self.leader_payload is not None else self.leader)


class Notice(BaseModel):
    """One message the script pushes on the run's notify list."""

    sample_id: str
    step: int
    input_hash: str
    outcome: Outcome
    reason: str | None = None
    snapshot: Snapshot
    spent_nusd: int | None = None  # the run's spend after this sample, in nano-dollars
    cost_unknown: str | None = None  # set (to the model, if known) when this sample's price is unknown


class Said(BaseModel):
    """What the model said, kept with its vote or red flag: the completion's text (an excerpt, to bound what Redis
    holds) and its digest (byte-identical texts are copies), and the parser's own reason for a red flag."""

    text: str = ""
    digest: str = ""
    detail: str = ""
    cached_tokens: int = 0  # input tokens the provider read from its prompt cache
    cache_write_tokens: int = 0  # input tokens it wrote to its prompt cache
    call: str = ""  # the provider call that drew it: a second delivery's new call is billed, a retried record is not


class Drawer(BaseModel):
    """Who drew a sample: the model ("provider:model"), what the call cost (None: price unknown), and
    whether votes are counted by model (an ensemble)."""

    model: str = ""
    cost_nusd: int | None = 0
    by_model: bool = False


class Meaning(BaseModel):
    """What a semantic vote adds (answer.match: semantic): the answer's unit vector, and where it may join."""

    vector: bytes  # packed little-endian float32, unit length
    group: str = ""  # canonical JSON of the fields that must still match exactly; "" when none
    threshold: float  # join: the least similarity to a candidate that joins it
    open_below: float | None = None  # less similar than this to every candidate opens one (None: threshold)
    max_candidates: int
    members_kept: int = MEMBERS_KEPT
    tokens: int = 0  # what the embedding call served
    cost_nusd: int | None = 0  # what it cost; None when its price is unknown


class Contest(BaseModel):
    """Where a sample belongs: one run, one step, one exact input."""

    run_id: str
    step: int
    input_hash: str
    k: int

    @property
    def keys(self) -> keys.StepKeys:
        return keys.step(self.run_id, self.step, self.input_hash)


class VoteBook:
    """Records samples with the Lua script, registered once per client."""

    def __init__(
        self, client: redis.Redis, *, events_maxlen: int = 100_000, contest_ttl_s: int = 3_600, worker: str = ""
    ):
        """`worker` names the process recording (host/pid) on its events, for whoever watches the run."""
        self._client = client
        self._script = client.register_script(_SOURCE)
        self._semantic_script = client.register_script(_SEMANTIC_SOURCE)
        self._claim_first = client.register_script(_CLAIM_FIRST)
        self._events_maxlen = events_maxlen
        self._contest_ttl_s = contest_ttl_s
        self._worker = worker
        self._going: dict[str, float] = {}  # run id -> when it was last read to be still going

    def record(
        self,
        contest: Contest,
        sample_id: str,
        kind: Literal["vote", "red_flag", "error", "fatal"],
        value: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        payload: str = "",
        drawn_by: Drawer | None = None,
        meaning: Meaning | None = None,
        first: bool = False,
        said: Said | None = None,
    ) -> Recorded:
        """`value` is the vote key (or the reason); `payload` the answer when it differs from the key;
        `drawn_by` the model that drew it and what it cost; `meaning` a semantic vote's vector; `first` when it
        was drawn at the first temperature: having claimed that (`claim_first`), or in a contest the orchestrator
        knew fresh, where the script takes the claim with the vote; `said` what the model said."""
        script, script_keys, args = self._call(
            contest, sample_id, kind, value, input_tokens, output_tokens, payload, drawn_by, meaning, first, said
        )
        with store_errors(f"recording sample {sample_id}"):
            outcome, leader, runner_up, *said = script(keys=script_keys, args=args)
        # The reason the script recorded: a vote it red-flags itself (a second T=0 vote, a semantic cap) has one.
        outcome, reason = (_text(v) for v in (outcome, said[0] if said else None))
        return Recorded(outcome=Outcome(outcome), leader_votes=leader, runner_up_votes=runner_up, reason=reason)

    def queue(
        self,
        pipe: redis.client.Pipeline,
        contest: Contest,
        sample_id: str,
        kind: Literal["vote", "red_flag"],
        value: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """The same script call as `record`, queued on `pipe` (whose `execute` returns the raw replies): for
        benchmarks/scale_out.py, which measures how many of them one Redis serves."""
        script, script_keys, args = self._call(contest, sample_id, kind, value, input_tokens, output_tokens)
        script(keys=script_keys, args=args, client=pipe)

    def _call(
        self,
        contest: Contest,
        sample_id: str,
        kind: str,
        value: str,
        input_tokens: int,
        output_tokens: int,
        payload: str = "",
        drawn_by: Drawer | None = None,
        meaning: Meaning | None = None,
        first: bool = False,
        said: Said | None = None,
    ) -> tuple[Script, list[str], list[Any]]:
        """The script to run for one sample, with its KEYS and ARGV (lua/record_sample.lua's contract)."""
        drawn_by = drawn_by or Drawer()
        said = said or Said()
        step = contest.keys
        run = contest.run_id
        script = self._script
        extra_keys: list[str] = []
        extra_args: list[Any] = []
        if meaning is not None:
            script, extra_keys = self._semantic_script, [step.vectors]
            cost = -1 if meaning.cost_nusd is None else meaning.cost_nusd
            extra_args = [meaning.vector, meaning.group, repr(meaning.threshold), meaning.max_candidates]
            extra_args += [meaning.tokens, cost]
        script_keys = [
            step.seen,
            step.tally,
            step.status,
            step.payloads,
            keys.notify(run),
            keys.events(run),
            keys.stats(run),
            step.voters,
            step.first,
            step.texts,
            *extra_keys,
        ]
        args = [
            sample_id,
            kind,
            value,
            payload,
            contest.k,
            contest.step,
            contest.input_hash,
            input_tokens,
            output_tokens,
            self._events_maxlen,
            self._contest_ttl_s,
            drawn_by.model,
            -1 if drawn_by.cost_nusd is None else drawn_by.cost_nusd,
            "1" if drawn_by.by_model else "0",
            self._worker,
            "1" if first else "0",
            said.cached_tokens,
            said.digest,
            said.text,
            said.detail,
            said.call,
            said.cache_write_tokens,
            *extra_args,
        ]
        if meaning is not None:
            opens = meaning.threshold if meaning.open_below is None else meaning.open_below
            args += [repr(opens), meaning.members_kept]  # ARGV[29], ARGV[30]
        return script, script_keys, args

    def _entry(self, contest: Contest, sample_id: str, kind: str, **fields: str) -> dict[str, str | int]:
        worker = {"worker": self._worker} if self._worker else {}
        return {"step": contest.step, "input": contest.input_hash, "sample": sample_id, "kind": kind} | fields | worker

    def event(self, contest: Contest, sample_id: str, kind: str, **fields: str) -> None:
        """An event the script does not write itself (skips, retries, rate-limit waits)."""
        entry = self._entry(contest, sample_id, kind, **fields)
        with store_errors(f"writing a {kind} event"):
            self._client.xadd(keys.events(contest.run_id), entry, maxlen=self._events_maxlen, approximate=True)

    def skip(self, contest: Contest, sample_id: str) -> None:
        """A sample not drawn because its step was decided: an event, and a notice so the orchestrator
        stops waiting for it."""
        notice = Notice(
            sample_id=sample_id,
            step=contest.step,
            input_hash=contest.input_hash,
            outcome=Outcome.SKIPPED,
            snapshot=Snapshot(),
        )
        entry = self._entry(contest, sample_id, "skipped")
        with store_errors("noting a skipped sample"), self._client.pipeline(transaction=False) as pipe:
            pipe.xadd(keys.events(contest.run_id), entry, maxlen=self._events_maxlen, approximate=True)
            pipe.rpush(keys.notify(contest.run_id), notice.model_dump_json())
            pipe.execute()

    def note_temperature_omitted(self, contest: Contest, sample_id: str) -> None:
        """The run's report says when samples were drawn at the model's own temperature."""
        with store_errors("noting the omitted temperature"):
            first = self._client.hsetnx(keys.stats(contest.run_id), "temperature_omitted", 1)
        if first:
            self.event(contest, sample_id, "temperature_omitted")

    def snapshot(self, contest: Contest) -> Snapshot:
        """What Redis knows of one contest, for an orchestrator that (re)joins it."""
        step = contest.keys
        with store_errors(f"reading step {contest.step}"):
            raw = {k.decode(): v.decode() for k, v in self._client.hgetall(step.status).items()}
            payload = self._client.hget(step.payloads, raw["leader"]) if "leader" in raw else None
        decided = raw.pop("decided", "0") == "1"
        return Snapshot(decided=decided, leader_payload=payload.decode() if payload else None, **raw)

    def tally(self, contest: Contest) -> dict[str, int]:
        """Every candidate's counted votes, most first (for reports: the script alone decides)."""
        with store_errors(f"reading the tally of step {contest.step}"):
            raw = self._client.hgetall(contest.keys.tally)
        return dict(sorted(((k.decode(), int(v)) for k, v in raw.items()), key=lambda kv: -kv[1]))

    def claim_first(self, contest: Contest, sample_id: str) -> bool:
        """Whether this sample is the contest's first (the one drawn at the first temperature): one sample
        id claims it, once, whichever orchestrator sent it. Lives as long as the contest's status does
        (lua/claim_first.lua)."""
        step = contest.keys
        with store_errors(f"claiming the first sample of step {contest.step}"):
            return self._claim_first(keys=[step.first, step.status], args=[sample_id, self._contest_ttl_s]) == 1

    def stopped(self, run_id: str, fresh_s: float = 1.0) -> bool:
        """Whether the run stopped sending samples (done, cancelled, out of budget): a speculative window's first
        samples skip `wants`, and must not all be drawn after a cancel. "Still going" is trusted for `fresh_s`;
        "stopped" is read again every time, so a resumed run's samples are not skipped."""
        now = time.monotonic()
        if now - self._going.get(run_id, -fresh_s) < fresh_s:
            return False
        with store_errors(f"reading run {run_id}"):
            stopped = bool(self._client.hexists(keys.meta(run_id), "stop"))
        if not stopped:
            if len(self._going) > 1024:  # runs long gone
                self._going.clear()
            self._going[run_id] = now
        return stopped

    def wants(self, contest: Contest) -> bool:
        """Whether a sample of this contest is still worth drawing: its step is undecided and not yet committed
        (a committed contest's status is gone a minute later), and its run still sends samples (one that ended,
        spent its budget or was cancelled does not)."""
        run = contest.run_id
        with store_errors(f"reading step {contest.step}"), self._client.pipeline(transaction=False) as pipe:
            pipe.hget(contest.keys.status, "decided").hexists(keys.meta(run), "stop")
            decided, stopped, at = pipe.hget(keys.checkpoint(run), "step").execute()
        return decided not in (b"1", "1") and not stopped and contest.step >= int(at or 0)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
