"""Every Redis key of maker is built here and nowhere else.

All keys of one run share the hash tag ``{run_id}`` so a Redis Cluster keeps them in one slot,
which the Lua vote script needs (it touches several keys of a run atomically).
A step's keys carry the step index AND a hash of its input (state and previous answer), so a vote is
always about one exact input: a speculative mode may vote on a step before its input is committed.
"""

import re
from dataclasses import dataclass

from maker_workers.errors import ConfigError

PREFIX = "maker"
_RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_run_id(run_id: str) -> str:
    """The run id, if it is safe inside a key name; ConfigError otherwise. A run id becomes part of every
    key of its run: a brace would break the hash tag, a colon the key schema, `*` or `?` the glob that
    lists a run's contests (another run's keys would match)."""
    if not _RUN_ID.fullmatch(run_id):
        shown = run_id if len(run_id) <= 80 else f"{run_id[:80]}..."
        raise ConfigError(
            f"run id {shown!r} is not valid: use 1 to 64 letters, digits, '-', '_' or '.' "
            "(no braces, colons, spaces or wildcards: a run id is part of its Redis keys)"
        )
    return run_id


def _run(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}"


def notify(run_id: str) -> str:
    """List the orchestrator blocks on; the vote script pushes one outcome per sample."""
    return f"{_run(run_id)}:notify"


def events(run_id: str) -> str:
    """Stream of every vote, red flag, decision, retry and rate-limit wait of the run."""
    return f"{_run(run_id)}:events"


def stats(run_id: str) -> str:
    """Hash of run-wide counters (samples, red flags by reason, late votes, tokens)."""
    return f"{_run(run_id)}:stats"


def meta(run_id: str) -> str:
    """Hash with the run's configuration and task definition (field `task`, what workers read), written once."""
    return f"{_run(run_id)}:meta"


def meta_pattern() -> str:
    """Glob matching every run's meta hash: `maker status` lists the runs by them."""
    return meta("*")


def run_of_meta(key: str) -> str:
    """The run id in a key `meta_pattern` matched."""
    return key[key.index("{") + 1 : key.rindex("}")]


def lease(run_id: str) -> str:
    """String naming the one orchestrator that drives the run; it expires unless renewed."""
    return f"{_run(run_id)}:lease"


def checkpoint(run_id: str) -> str:
    """Hash with the last committed step and the state it produced."""
    return f"{_run(run_id)}:checkpoint"


@dataclass(frozen=True)
class StepKeys:
    """The keys of one (step, input) voting contest."""

    seen: str
    tally: str
    status: str
    payloads: str
    voters: str  # ensembles only: votes by model
    first: str  # the sample id that drew the contest's first (T=0) sample
    vectors: str  # semantic contests only: each candidate's unit vector (lua/semantic.lua)
    texts: str  # digests of the texts counted as votes, and distinct texts per candidate (copies count once)

    def every(self) -> tuple[str, ...]:
        return (self.seen, self.tally, self.status, self.payloads, self.voters, self.first, self.vectors, self.texts)


def step_status_pattern(run_id: str) -> str:
    """Glob matching the status hash of every contest of a run, guesses included."""
    return f"{_run(run_id)}:step:*:status"


def step(run_id: str, index: int, input_hash: str) -> StepKeys:
    base = f"{_run(run_id)}:step:{index}:{input_hash}"
    return StepKeys(
        seen=f"{base}:seen",
        tally=f"{base}:tally",
        status=f"{base}:status",
        payloads=f"{base}:payloads",
        voters=f"{base}:voters",
        first=f"{base}:first",
        vectors=f"{base}:vectors",
        texts=f"{base}:texts",
    )


def bench_done(bench_id: str) -> str:
    """List the benchmark's no-op tasks push to, so their completion can be awaited."""
    return f"{PREFIX}:{{bench-{bench_id}}}:done"


def answers(run_id: str) -> str:
    """List of every committed step's winning answer, in order: lets a resumed run be scored and replayed."""
    return f"{_run(run_id)}:answers"


def jobs() -> str:
    """Hash of the MCP server's jobs: job id (its run's id) -> the job's record as JSON. Spans runs, so that
    a restarted server lists, follows and cancels the jobs of the one before."""
    return f"{PREFIX}:jobs"


def rate_limit(provider: str, model: str) -> str:
    """The shared rate of one provider and model: it spans runs, like the account's quota does."""
    return f"{PREFIX}:ratelimit:{{{provider}:{model}}}"


def rate_limit_tokens(provider: str, model: str) -> str:
    """The shared token rate of one provider and model, in the same slot as its request rate."""
    return f"{rate_limit(provider, model)}:tokens"
