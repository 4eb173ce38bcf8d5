"""`maker audit`: check a run from its Redis alone. Nothing lost, nothing counted twice.

A committed contest's seen set, tally and payloads are deleted at commit (lua/commit_step.lua), so the
audit replays the run's events stream, where the vote script wrote every vote and decision as it counted
them. The task stored with the run and its answer log give each committed step's exact input (the hash
its contest is keyed by); the votes of that input, up to the step's `decided` event, are recounted.

Checks, each a line of the report:
- stream: its entries are whole (the cap trims the oldest; nothing is missing after the first) and readable
- answers: one entry in the answer log per committed step, and replaying them gives the checkpoint
- samples: no sample id is counted as a vote twice, anywhere in the run
- margin: each committed step's decided candidate is its recount's leader, ahead by k, as the `decided`
  event says, and it is the answer the log holds
- votes: every vote belongs to a committed contest (up to its decision) or to one never committed
  (a dropped guess, or a step not reached); none is counted after its contest's decision
- status: the contests' status hashes, where they have not expired, agree (a second source)

The stream is capped (about 100,000 entries): when its oldest entries were trimmed, steps whose votes
may have gone with them are counted as not checked, which is not a violation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import BaseModel, computed_field

from maker_workers import keys
from maker_workers.domains import load_task
from maker_workers.domains.base import JSON, Task, canonical
from maker_workers.errors import ConfigError, StoreError, store_errors
from orchestrator.cluster.connect import connect, redact
from orchestrator.engine.store import RunStore

_PAGE = 5_000  # stream entries read per XRANGE
_SHOWN = 20  # violations printed per check; the JSON report has them all


class Check(BaseModel):
    name: str
    summary: str
    violations: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.violations


class AuditReport(BaseModel):
    run_id: str
    task: str
    k: int
    steps: int  # committed, as the checkpoint says
    events: int  # entries on the stream now
    trimmed: bool  # the stream's oldest entries were dropped by its cap
    steps_recounted: int  # committed steps checked from their votes
    steps_status_only: int  # votes trimmed, checked from the status hash alone
    steps_unchecked: int  # votes trimmed and status hash expired
    votes_committed: int
    votes_dropped: int  # in contests never committed: guesses that lost
    votes_open: int  # on steps past the checkpoint
    checks: list[Check]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def lines(self) -> Iterator[str]:
        """What `maker audit` prints: the run, then one line per check and its violations."""
        yield f"run {self.run_id} ({self.task}), k={self.k}: {self.steps} steps committed, {self.events} events"
        for check in self.checks:
            yield f"{'ok' if check.ok else 'VIOLATION':9} {check.name}: {check.summary}"
            for violation in check.violations[:_SHOWN]:
                yield f"          - {violation}"
            if len(check.violations) > _SHOWN:
                yield f"          ... and {len(check.violations) - _SHOWN} more (--json lists them all)"
        yield "audit: clean" if self.ok else "audit: FAILED"


@dataclass
class _Event:
    id: tuple[int, int]
    kind: str
    step: int
    input: str
    sample: str
    fields: dict[str, str]

    @property
    def where(self) -> str:
        return f"step {self.step} input {self.input} (event {self.id[0]}-{self.id[1]})"


@dataclass
class _Contest:
    """One (step, input) contest as the stream tells it."""

    counted: list[_Event] = field(default_factory=list)  # votes up to and including the decision
    decided: _Event | None = None
    decisions: int = 0
    after: list[_Event] = field(default_factory=list)  # votes after the decision: must have been late

    def recount(self) -> tuple[str | None, int, int]:
        """(leader, its votes, the runner-up's) from the counted votes; no leader on a tie at the top."""
        ranked = Counter(e.fields["candidate"] for e in self.counted).most_common()
        if not ranked:
            return None, 0, 0
        runner_up = ranked[1][1] if len(ranked) > 1 else 0
        return (ranked[0][0] if ranked[0][1] > runner_up else None), ranked[0][1], runner_up


@dataclass
class _Step:
    """A committed step: its exact input and what won it."""

    input: str
    answer: JSON
    k: int


def audit_url(url: str, run_id: str) -> AuditReport:
    """Audit run `run_id` in the Redis at `url`; ConfigError when there is no such run."""
    keys.check_run_id(run_id)
    client = connect(url)
    try:
        if not RunStore(client, run_id).exists():
            raise ConfigError(f"no run {run_id} in the Redis at {redact(url)}: check the run id and --redis-url")
        return audit(client, run_id)
    finally:
        client.close()


def audit(client: redis.Redis, run_id: str) -> AuditReport:
    """Every check of the module docstring on one run; the report says what was checked and what failed."""
    store = RunStore(client, run_id)
    definition = store.task()
    if definition is None:
        raise ConfigError(f"run {run_id} has no task definition in its meta: it was never started")
    task = load_task(definition)
    with store_errors(f"reading the config of run {run_id}"):
        config = json.loads(client.hget(keys.meta(run_id), "config") or "{}")
    base_k = int(config.get("k", 1))
    speculate = config.get("speculate", 0)  # None: adaptive, never deeper than speculate_max
    speculate = int(config.get("speculate_max", 32) if speculate is None else speculate)
    events, trimmed, stream_check = _read_events(client, run_id)
    raised = sorted((e.step, _number(e.fields.get("k"))) for e in events if e.kind == "k_changed")
    try:
        saved = store.saved()
    except (KeyError, ValueError) as exc:
        raise StoreError(f"run {run_id}'s checkpoint cannot be read ({exc!r}): it was not written by maker") from exc
    with store_errors(f"reading the answers of run {run_id}"):
        answers = client.lrange(keys.answers(run_id), 0, -1)
    at = saved.step if saved is not None else 0

    answer_check, path = _check_answers(task, answers, saved.state if saved else None, at, base_k, raised)
    contests, samples_check, malformed = _contests(events)
    stream_check.violations.extend(malformed)
    committed_inputs = {(i, s.input) for i, s in enumerate(path)}
    decided = {i for (i, h), c in contests.items() if (i, h) in committed_inputs and c.decided}

    def whole(step: int) -> bool:
        # Contest j is opened only once step j - speculate - 1 is committed: if that step's decision is
        # still on the stream, nothing of contest j was trimmed.
        anchor = step - speculate - 1
        return not trimmed or (anchor >= 0 and anchor in decided)

    statuses = _statuses(client, run_id)
    margin, status_check, counts = _check_steps(path, contests, statuses, whole)
    votes_check, votes = _check_votes(contests, committed_inputs, len(answers))
    return AuditReport(
        run_id=run_id,
        task=_describe(definition),
        k=base_k,
        steps=at,
        events=len(events),
        trimmed=trimmed,
        steps_recounted=counts["recounted"],
        steps_status_only=counts["status_only"],
        steps_unchecked=counts["unchecked"],
        votes_committed=votes["committed"],
        votes_dropped=votes["dropped"],
        votes_open=votes["open"],
        checks=[stream_check, answer_check, samples_check, margin, votes_check, status_check],
    )


def _describe(definition: dict[str, Any]) -> str:
    if definition.get("kind") == "hanoi":
        return f"hanoi with {definition.get('disks')} disks"
    return f"spec task {definition.get('spec', {}).get('name', '?')!r}"


def _read_events(client: redis.Redis, run_id: str) -> tuple[list[_Event], bool, Check]:
    """Every entry of the run's stream, whether its oldest were trimmed, and the check of its wholeness."""
    stream = keys.events(run_id)
    found: list[_Event] = []
    with store_errors(f"reading the events of run {run_id}"):
        if not client.exists(stream):
            return found, False, Check(name="stream", summary="no events: the run has drawn no sample")
        info = client.xinfo_stream(stream)
        start = "-"
        while True:
            page = client.xrange(stream, start, "+", count=_PAGE)
            found.extend(_event(entry_id, raw) for entry_id, raw in page)
            if len(page) < _PAGE:
                break
            start = "(" + page[-1][0].decode()
    violations = []
    deleted = _id(info.get("max-deleted-entry-id", b"0-0"))
    if found and deleted >= found[0].id:  # XTRIM drops the oldest; only XDEL leaves a hole after the first
        violations.append(f"entries were deleted from the middle of the stream (up to {deleted[0]}-{deleted[1]})")
    added = info.get("entries-added")
    # Redis before 7 does not say how many were ever added: then the stream may have been trimmed.
    trimmed = added is None or int(added) > len(found)
    summary = f"{len(found)} entries, " + (f"of {added} added: the oldest trimmed" if trimmed else "none trimmed")
    return found, trimmed, Check(name="stream", summary=summary, violations=violations)


def _id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _event(entry_id: bytes, raw: dict[bytes, bytes]) -> _Event:
    fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    step = fields.get("step", "")
    return _Event(
        id=_id(entry_id),
        kind=fields.get("kind", ""),
        step=int(step) if step.isascii() and step.lstrip("-").isdigit() else -1,
        input=fields.get("input", ""),
        sample=fields.get("sample", ""),
        fields=fields,
    )


def _number(text: str | None) -> int:
    """A counter as the scripts write it; -1 for anything else (a forged field), which no check passes."""
    return int(text) if text is not None and text.isascii() and text.isdigit() else -1


def _k_at(step: int, base_k: int, raised: list[tuple[int, int]]) -> int:
    """The k a step must be decided with: the run's, or the last raise (k_changed) at or before it."""
    k = base_k
    for first, new_k in raised:
        if first <= step:
            k = max(k, new_k)
    return k


def _check_answers(
    task: Task, answers: list[bytes], state: JSON, at: int, base_k: int, raised: list[tuple[int, int]]
) -> tuple[Check, list[_Step]]:
    """Replay the answer log into each committed step's input; it must end where the checkpoint is."""
    violations = []
    if len(answers) != at:
        violations.append(f"the answer log holds {len(answers)} answers, the checkpoint says {at} steps committed")
    path: list[_Step] = []
    current, previous = task.initial_state(), None
    for i, raw in enumerate(answers):
        try:
            answer = json.loads(raw)
            path.append(_Step(task.input_hash(current, i, previous), answer, _k_at(i, base_k, raised)))
            current = task.next_state(current, i, previous, answer)
        except Exception as exc:  # the task's own code, on whatever the log holds: any failure is the log's
            violations.append(f"step {i}'s logged answer {raw[:200]!r} builds no next state: {exc!r}")
            break
        previous = answer
    else:
        if len(answers) == at and at and canonical(current) != canonical(state):
            violations.append(f"replaying the {at} logged answers does not give the checkpoint's state")
    summary = f"{len(answers)} answers for {at} committed steps; replayed to the checkpoint's state"
    return Check(name="answers", summary=summary, violations=violations), path


def _contests(events: list[_Event]) -> tuple[dict[tuple[int, str], _Contest], Check, list[str]]:
    """The stream's votes and decisions by contest, and the check that no sample id is counted twice."""
    contests: dict[tuple[int, str], _Contest] = {}
    first_seen: dict[str, _Event] = {}
    twice, malformed = [], []
    for event in events:
        if event.kind not in ("vote", "decided"):
            continue
        if event.step < 0 or not event.input or "candidate" not in event.fields:
            malformed.append(f"a {event.kind} event without its step, input or candidate ({event.id[0]}-{event.id[1]})")
            continue
        contest = contests.setdefault((event.step, event.input), _Contest())
        if event.kind == "decided":
            contest.decisions += 1
            contest.decided = contest.decided or event
            continue
        if event.sample in first_seen:
            twice.append(f"sample {event.sample!r} is counted at {first_seen[event.sample].where} and at {event.where}")
        first_seen.setdefault(event.sample, event)
        (contest.after if contest.decided else contest.counted).append(event)
    summary = f"{sum(len(c.counted) + len(c.after) for c in contests.values())} votes from {len(first_seen)} samples"
    return contests, Check(name="samples", summary=summary, violations=twice), malformed


def _matches(candidate: str, answer: JSON) -> bool:
    """Whether a vote key is the committed answer's: the answer itself, or the fields it votes on."""
    if candidate == canonical(answer):
        return True
    try:
        voted = json.loads(candidate)
    except ValueError:
        return False
    return isinstance(voted, dict) and isinstance(answer, dict) and all(answer.get(f) == v for f, v in voted.items())


def _check_steps(
    path: list[_Step],
    contests: dict[tuple[int, str], _Contest],
    statuses: dict[tuple[int, str], dict[str, str]],
    whole: Callable[[int], bool],
) -> tuple[Check, Check, dict[str, int]]:
    """The k margin of every committed step, from its recounted votes and from its status hash."""
    margin: list[str] = []
    agree: list[str] = []
    counts = Counter(recounted=0, status_only=0, unchecked=0)
    compared = 0
    for i, step in enumerate(path):
        contest = contests.get((i, step.input), _Contest())
        status = statuses.get((i, step.input))
        if whole(i):
            counts["recounted"] += 1
            margin.extend(_recount_violations(i, step, contest))
        elif status is None:
            counts["unchecked"] += 1
        else:
            counts["status_only"] += 1
        if status is not None:
            compared += 1
            agree.extend(_status_violations(i, step, status, contest if whole(i) else None))
    parts = [f"{counts['recounted']} of {len(path)} committed steps recounted from their votes"]
    if counts["status_only"]:
        parts.append(f"{counts['status_only']} checked from their status hash alone (votes trimmed)")
    if counts["unchecked"]:
        parts.append(f"{counts['unchecked']} could not be checked (votes trimmed, status expired)")
    summary = "; ".join(parts) + ": each winner leads by k among votes of exactly its input"
    status_summary = f"{compared} committed contests' status hashes still in Redis, compared"
    return (
        Check(name="margin", summary=summary, violations=margin),
        Check(name="status", summary=status_summary, violations=agree),
        counts,
    )


def _recount_violations(i: int, step: _Step, contest: _Contest) -> list[str]:
    decided = contest.decided
    if decided is None:
        return [f"step {i} is committed, but its input {step.input} has no decided event"]
    found = []
    leader, leader_votes, runner_up = contest.recount()
    candidate = decided.fields["candidate"]
    if contest.decisions > 1:
        found.append(f"step {i} was decided {contest.decisions} times")
    if leader_votes - runner_up < step.k:
        found.append(f"step {i} was decided with {leader_votes} votes to {runner_up}: a margin below k={step.k}")
    if candidate != leader:
        found.append(f"step {i}'s decided candidate {candidate} is not its recount's leader {leader}")
    if (decided.fields.get("votes"), decided.fields.get("runner_up")) != (str(leader_votes), str(runner_up)):
        said = f"{decided.fields.get('votes')} to {decided.fields.get('runner_up')}"
        found.append(f"step {i}'s decided event says {said}, the recount {leader_votes} to {runner_up}")
    if not _matches(candidate, step.answer):
        found.append(f"step {i}'s logged answer {canonical(step.answer)} is not its decided candidate {candidate}")
    return found


def _status_violations(i: int, step: _Step, status: dict[str, str], contest: _Contest | None) -> list[str]:
    found = []
    winner = status.get("winner")
    leader_votes, runner_up = _number(status.get("leader_votes")), _number(status.get("runner_up_votes"))
    if status.get("decided") != "1" or winner is None:
        return [f"step {i} is committed, but its status hash is not decided"]
    if leader_votes - runner_up < step.k:
        found.append(f"step {i}'s status hash has {leader_votes} votes to {runner_up}: a margin below k={step.k}")
    if not _matches(winner, step.answer):
        found.append(f"step {i}'s status hash names winner {winner}, not the logged answer")
    if contest is not None:
        leader, votes, second = contest.recount()
        counted = _number(status.get("votes"))
        if (winner, leader_votes, runner_up, counted) != (leader, votes, second, len(contest.counted)):
            found.append(
                f"step {i}'s status hash ({winner} {leader_votes} to {runner_up}, {status.get('votes')} votes) "
                f"is not its recount ({leader} {votes} to {second}, {len(contest.counted)} votes)"
            )
    return found


def _check_votes(
    contests: dict[tuple[int, str], _Contest], committed: set[tuple[int, str]], steps: int
) -> tuple[Check, dict[str, int]]:
    """Where every vote went: a committed contest, a dropped guess, or a step not reached yet."""
    votes = Counter(committed=0, dropped=0, open=0)
    dropped_contests = 0
    violations = []
    for (i, h), contest in contests.items():
        where = "committed" if (i, h) in committed else "dropped" if i < steps else "open"
        votes[where] += len(contest.counted)
        dropped_contests += where == "dropped"
        for late in contest.after:
            violations.append(f"sample {late.sample!r} was counted at {late.where}, after its contest was decided")
    summary = (
        f"{votes['committed']} in committed contests, {votes['dropped']} in {dropped_contests} dropped guesses, "
        f"{votes['open']} on steps not committed yet; {len(violations)} counted after their contest's decision"
    )
    return Check(name="votes", summary=summary, violations=violations), votes


def _statuses(client: redis.Redis, run_id: str) -> dict[tuple[int, str], dict[str, str]]:
    """Every contest status hash of the run still in Redis, by (step, input)."""
    prefix, suffix = keys.step_status_pattern(run_id).split("*")
    found = {}
    with store_errors(f"reading the contests of run {run_id}"):
        for raw in client.scan_iter(match=keys.step_status_pattern(run_id), count=1000):
            name = raw.decode()
            step, _, input_hash = name[len(prefix) : -len(suffix)].partition(":")
            if step.isdigit() and input_hash:
                fields = client.hgetall(raw)
                found[(int(step), input_hash)] = {k.decode(): v.decode() for k, v in fields.items()}
    return found
