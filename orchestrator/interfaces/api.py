"""The Python API: run a task, take one vote, follow a run. The CLI and the MCP server are thin layers on it.

    from orchestrator import api
    report = api.run_spec("examples/sort.yaml")                  # embedded cluster, started and stopped
    result = api.vote("Compute: 17 * 23", answer=AnswerSpec(format="json"), voting=VotingConfig(k=3))
    for progress in api.follow(report.run_id, "redis://host:6379/0"): ...

Every call takes `ClusterOptions`: with a `redis_url` it uses that cluster's workers; without one it starts
the embedded default (private Redis, simulated LLM, Celery workers) for the call's duration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from maker_workers import keys
from maker_workers.domains import load_task
from maker_workers.domains.base import JSON, Task
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.domains.spec import AnswerSpec, SpecTask, TaskSpec, load_spec, spec_from_data
from maker_workers.errors import (
    BudgetSpent,
    Cancelled,
    ClusterFailed,
    ConfigError,
    MakerError,
    Rejected,
    StepFailed,
    store_errors,
)
from maker_workers.votes import Contest, VoteBook
from orchestrator import VERSION
from orchestrator.cluster.connect import Cluster, ClusterOptions, cluster_for_run, connect, redact
from orchestrator.engine.meanings import MeaningsRule
from orchestrator.engine.runner import CommittedStep, Runner, VotingConfig
from orchestrator.engine.store import Checkpoint, RunStore
from orchestrator.reports.phrasings import Candidate, phrasings
from orchestrator.reports.report import (
    ModelCounts,
    RunCounts,
    RunReport,
    Scorer,
    StepLog,
    TaskReport,
    cost_usd,
    embedding_cost_usd,
)
from orchestrator.reports.samples import Sample, examples, samples

__all__ = [
    "AnswerSpec",
    "ClusterOptions",
    "CommittedStep",
    "Hooks",
    "RunProgress",
    "TaskSpec",
    "VoteResult",
    "VotingConfig",
    "answer_spec",
    "follow",
    "run_hanoi",
    "run_spec",
    "spec_task",
    "vote",
    "voting_for",
]


@dataclass
class Hooks:
    """What a caller hears while a run goes (the CLI draws its progress bar and trace from these)."""

    on_cluster: Callable[[Cluster], None] = lambda _: None
    on_resume: Callable[[Checkpoint], None] = lambda _: None
    on_runner: Callable[[Runner], None] = lambda _: None  # the run's driver, once built (metrics read it)
    on_start: Callable[[str, int], None] = lambda run_id, steps_done: None
    on_step: Callable[[CommittedStep], None] = lambda _: None
    on_stall: Callable[[float], None] = lambda _: None
    on_warning: Callable[[str], None] = lambda _: None  # the run is off its plan (and what it did about it)
    on_tick: Callable[[], None] = lambda: None  # every few seconds while the run goes (the CLI's pending interrupt)


@dataclass
class _Outcome:
    run_id: str
    done: bool
    failure: str | None
    stats: dict[str, int]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    failure_detail: str | None = None


def _drive(
    task: Task,
    log: StepLog,
    voting: VotingConfig,
    cluster: ClusterOptions,
    run_id: str | None,
    hooks: Hooks,
    finish: Callable[[Runner], dict[str, Any]] = lambda _: {},
) -> _Outcome:
    """One run of `task` on the cluster, resumed when `run_id` names one; failures end it with a reason."""
    with cluster_for_run(cluster) as running:
        hooks.on_cluster(running)
        runner = Runner(
            running.client,
            running.broker,
            voting,
            task,
            run_id=run_id,
            health_check=lambda: _check(running, hooks),
            on_stall=hooks.on_stall,
            on_warning=hooks.on_warning,
        )
        if run_id is not None and not runner.store.exists():
            raise MakerError(
                f"no run {run_id} in the Redis at {redact(running.redis_url)}: check the run id and --redis-url"
            )
        if run_id is not None and runner.store.finished() == "":
            at = runner.store.saved()
            if at is not None and task.done(at.state, at.step):
                raise ConfigError(
                    f"run {run_id} is finished: it reached its done condition after {at.step} steps, so there is "
                    f"nothing to resume (`maker status {run_id} --redis-url ...` shows it)"
                )
        hooks.on_runner(runner)
        saved = runner.start()
        if saved is not None:
            log.replay(runner.store.answers(), saved.state)
            hooks.on_resume(saved)
        hooks.on_start(runner.run_id, log.steps)

        def on_commit(step: CommittedStep) -> None:
            log.observe(step)
            hooks.on_step(step)

        started = time.perf_counter()
        failure = detail = None
        try:
            runner.run(on_commit)
        except BudgetSpent as exc:  # stopped cleanly: the report says so, and the run can be resumed
            failure, detail = "budget", str(exc)
        except Cancelled as exc:
            failure, detail = "cancelled", str(exc)
        except (StepFailed, ClusterFailed, Rejected) as exc:  # the run ends; its report says how far it got
            failure = str(exc)
        except MakerError as exc:  # ends it too, for anyone following; a Ctrl-C leaves it to be resumed
            if runner.started:  # refused before it was recorded (answer.meanings): nothing to end
                with contextlib.suppress(MakerError):
                    runner.store.finish(str(exc))
            raise
        # Until the last commit: the drain that follows (samples still in flight, waited for so that their
        # cost is counted) is not the run's work.
        wall = (runner.ended_at or time.perf_counter()) - started
        runner.store.finish(failure)
        stats = runner.store.stats()
        extra = finish(runner) | {
            "red_flag_examples": examples(runner.client, runner.run_id),
            "semantic_rule": None if (rule := runner.store.semantic_rule()) is None else MeaningsRule(**rule),
        }
        return _Outcome(runner.run_id, failure is None, failure, stats, wall, extra, detail)


def _check(running: Cluster, hooks: Hooks) -> None:
    """What the run loop runs every few seconds: the cluster's health, then the caller's tick."""
    running.health_check()
    hooks.on_tick()


def voting_for(spec: TaskSpec, **given: Any) -> VotingConfig:
    """The voting config of a spec task: options given here win over the spec's own, then the defaults."""
    from_spec: dict[str, Any] = {
        name: getattr(spec, name)
        for name in ("k", "max_samples", "max_red_flags", "max_errors")
        if getattr(spec, name) is not None
    }
    if spec.temperature is not None:
        from_spec["first_temperature"] = spec.temperature.first
        from_spec["later_temperature"] = spec.temperature.later
    return VotingConfig(**{**from_spec, **{k: v for k, v in given.items() if v is not None}})


def spec_task(spec: TaskSpec | str | Path | dict[str, Any]) -> SpecTask:
    """A spec task from a model, a YAML/JSON file, or a dict; a bad spec raises SpecError naming the field."""
    if isinstance(spec, TaskSpec):
        return SpecTask(spec)
    if isinstance(spec, dict):
        return SpecTask(spec_from_data(spec))
    return SpecTask(load_spec(spec))


def run_spec(
    spec: TaskSpec | str | Path | dict[str, Any],
    *,
    voting: VotingConfig | None = None,
    cluster: ClusterOptions | None = None,
    run_id: str | None = None,
    hooks: Hooks | None = None,
) -> TaskReport:
    """Carry out a spec task to its done condition (or a failed step); `run_id` resumes that run."""
    task = spec_task(spec)
    voting = voting or voting_for(task.spec)
    log = StepLog(task.initial_state())

    def candidates(runner: Runner) -> dict[str, Any]:
        return {"candidates": phrasings(runner.client, runner.run_id) if task.semantic else {}}

    out = _drive(task, log, voting, cluster or ClusterOptions(), run_id, hooks or Hooks(), finish=candidates)
    report = TaskReport.build(out.run_id, task.name, out.done, voting.k, log, out.stats, out.wall_s, out.failure)
    report.failure_detail = out.failure_detail
    report.candidates = out.extra["candidates"]
    report.red_flag_examples = out.extra["red_flag_examples"]
    report.semantic_rule = out.extra["semantic_rule"]
    return report


def run_hanoi(
    disks: int,
    *,
    voting: VotingConfig | None = None,
    cluster: ClusterOptions | None = None,
    run_id: str | None = None,
    hooks: Hooks | None = None,
) -> RunReport:
    """Solve Towers of Hanoi with `disks` disks, scored against the optimal moves after each commit."""
    voting = voting or VotingConfig()
    scorer = Scorer(disks)
    out = _drive(HanoiTask(disks), scorer, voting, cluster or ClusterOptions(), run_id, hooks or Hooks())
    report = RunReport.build(out.run_id, voting.k, scorer, out.stats, out.wall_s, out.failure)
    report.failure_detail = out.failure_detail
    report.red_flag_examples = out.extra["red_flag_examples"]
    return report


def _question(prompt: str, answer: dict[str, Any], **optional: Any) -> TaskSpec:
    """A one-step task asking `prompt` literally: what `vote` runs, and how `answer_spec` checks a format."""
    data = {"name": "vote", "initial_state": None, "prompt": prompt, "answer": answer, "done": {"steps": 1}}
    return spec_from_data(data | {name: v for name, v in optional.items() if v is not None}, literal=True)


def answer_spec(given: dict[str, Any]) -> AnswerSpec:
    """An answer format checked as a spec's `answer` is; a problem raises SpecError naming `answer.<field>`."""
    return _question("-", given).answer


class VoteResult(BaseModel):
    """One error-corrected decision. `winner` is None when no answer got the k margin within the caps."""

    run_id: str
    version: str = VERSION  # maker's, that took the vote
    decided: bool
    winner: JSON = None
    winner_votes: int = 0
    runner_up_votes: int = 0
    tally: dict[str, int]  # every candidate's vote key -> counted votes, most first
    candidates: list[Candidate] = []  # semantic matching: each candidate's phrasings
    semantic_rule: MeaningsRule | None = None  # semantic matching: the rule measured on answer.meanings
    k: int
    samples: list[Sample]  # what each sample said: its text (an excerpt), verdict and reason
    sample_count: int  # samples drawn
    votes: int
    red_flags: int
    red_flags_by_reason: dict[str, int]
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    copies: int = 0  # votes whose text repeated one already counted, byte for byte
    cost_usd: float | None = 0.0
    embedding_tokens: int = 0
    embedding_cost_usd: float | None = 0.0
    models: dict[str, ModelCounts] = {}
    wall_s: float
    failure: str | None = None
    failure_detail: str | None = None


def vote(
    prompt: str,
    *,
    system: str | None = None,
    answer: AnswerSpec | None = None,
    voting: VotingConfig | None = None,
    cluster: ClusterOptions | None = None,
    max_output_tokens: int | None = None,
    hooks: Hooks | None = None,
) -> VoteResult:
    """Ask the cluster one question and vote on the answers, ahead-by-k; never a plurality guess."""
    answer_given = (answer or AnswerSpec(format="text")).model_dump(by_alias=True, exclude_none=True)
    spec = _question(prompt, answer_given, system=system or None, max_output_tokens=max_output_tokens)
    task = SpecTask(spec, literal=True)
    voting = (voting or VotingConfig()).model_copy(update={"keep_tallies": True})  # the result lists the tally
    log = StepLog(None)
    decided: list[CommittedStep] = []
    given = hooks or Hooks()

    def keep(step: CommittedStep) -> None:
        decided.append(step)
        given.on_step(step)

    def tally(runner: Runner) -> dict[str, Any]:
        contest = Contest(run_id=runner.run_id, step=0, input_hash=task.input_hash(None, 0, None), k=voting.k)
        found = phrasings(runner.client, runner.run_id) if task.semantic else {}
        said = list(samples(runner.client, runner.run_id))
        return {"tally": VoteBook(runner.client).tally(contest), "candidates": found.get(0, []), "samples": said}

    hooks = dataclasses.replace(given, on_step=keep)
    out = _drive(task, log, voting, cluster or ClusterOptions(), None, hooks, finish=tally)
    won = decided[0] if decided else None
    return VoteResult(
        run_id=out.run_id,
        decided=won is not None,
        winner=won.answer if won else None,
        winner_votes=won.winner_votes if won else 0,
        runner_up_votes=won.runner_up_votes if won else 0,
        tally=out.extra["tally"],
        candidates=out.extra["candidates"],
        semantic_rule=out.extra["semantic_rule"],
        k=voting.k,
        samples=out.extra["samples"],
        sample_count=out.stats.get("samples", 0),
        votes=out.stats.get("votes", 0),
        red_flags=out.stats.get("red_flags", 0),
        red_flags_by_reason=RunCounts.by_reason(out.stats),
        input_tokens=out.stats.get("input_tokens", 0),
        output_tokens=out.stats.get("output_tokens", 0),
        cached_input_tokens=out.stats.get("cached_input_tokens", 0),
        cache_write_input_tokens=out.stats.get("cache_write_input_tokens", 0),
        copies=out.stats.get("copies", 0),
        cost_usd=cost_usd(out.stats),
        embedding_tokens=out.stats.get("embedding_tokens", 0),
        embedding_cost_usd=embedding_cost_usd(out.stats),
        models=ModelCounts.from_stats(out.stats),
        wall_s=round(out.wall_s, 3),
        failure=out.failure,
        failure_detail=out.failure_detail,
    )


class RunProgress(BaseModel):
    """Where a run stands, as any machine that reaches its Redis can read it."""

    run_id: str
    task: str
    steps_done: int
    total_steps: int | None
    samples: int
    votes: int
    red_flags: int
    finished: bool
    failure: str | None = None


def progress(client: Any, run_id: str) -> RunProgress:
    """One reading of a run's progress from Redis."""
    store = RunStore(client, run_id)
    definition = store.task()
    if definition is None:
        raise MakerError(f"no run {run_id} in this Redis: check the run id and the Redis URL")
    task = load_task(definition)
    ended = store.finished()  # read first: once the run has ended, what follows is its final figures
    saved, stats = store.saved(), store.stats()
    return RunProgress(
        run_id=run_id,
        task=task.name,
        steps_done=saved.step if saved else 0,
        total_steps=task.total_steps(),
        samples=stats.get("samples", 0),
        votes=stats.get("votes", 0),
        red_flags=stats.get("red_flags", 0),
        finished=ended is not None,
        failure=ended or None,
    )


def follow(run_id: str, redis_url: str, *, wake_s: float = 1.0) -> Iterator[RunProgress]:
    """Yield a run's progress whenever its event stream moves (at least every `wake_s`), until it ends."""
    client = connect(redis_url)
    last_id = "$"
    try:
        while True:
            reading = progress(client, run_id)
            yield reading
            if reading.finished:
                return
            with store_errors(f"following run {run_id}"):
                got = client.xread({keys.events(run_id): last_id}, count=1000, block=int(wake_s * 1000))
            if got:
                last_id = got[-1][1][-1][0]
    finally:
        client.close()
