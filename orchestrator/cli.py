"""The `maker` command line: run Hanoi, serve the simulated LLM, benchmark a cluster."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import redis
import typer
from pydantic import ValidationError
from rich.console import Console

from maker_workers.celery_app import make_app
from maker_workers.errors import ClusterFailed, ConfigError, MakerError, StepFailed
from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SimServer
from orchestrator.embedded import SIM_READY, Embedded
from orchestrator.progress import StepProgress
from orchestrator.report import RunReport, Scorer
from orchestrator.runner import CommittedStep, Runner, VotingConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
sim_app = typer.Typer(no_args_is_help=True, help="The simulated LLM (OpenAI-compatible HTTP).")
app.add_typer(sim_app, name="sim-llm")
err = Console(stderr=True)

SimErrorRate = Annotated[float | None, typer.Option(help="share of well-formed answers that are wrong [0.01]")]
SimLatency = Annotated[float | None, typer.Option(help="mean simulated LLM latency in ms [0]")]
Seed = Annotated[int | None, typer.Option(help="seed of the simulated LLM [0]")]
SimMalformed = Annotated[float | None, typer.Option(help="share of malformed answers [0.01]")]
SimTooLong = Annotated[float | None, typer.Option(help="share of over-long answers [0.005]")]
RedisUrl = Annotated[
    str | None,
    typer.Option(envvar="MAKER_REDIS_URL", help="use this cluster's Redis and workers instead of the embedded one"),
]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def sim_config(**given: float | int | None) -> SimConfig:
    """The simulated LLM's config from the flags the user gave; unknown values keep their defaults."""
    try:
        return SimConfig(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"--sim-{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        fail(f"bad simulated-LLM setting: {problems}")


@app.command()
def hanoi(
    disks: Annotated[int, typer.Option(min=1, max=30, help="number of disks; the run has 2^N - 1 steps")] = 10,
    k: Annotated[int, typer.Option(min=1, help="votes the winner needs ahead of the runner-up")] = 3,
    workers: Annotated[int, typer.Option(min=1, help="embedded Celery worker processes")] = 2,
    concurrency: Annotated[int, typer.Option(min=1, help="threads per embedded worker")] = 8,
    sim_error_rate: SimErrorRate = None,
    sim_latency_ms: SimLatency = None,
    sim_malformed_rate: SimMalformed = None,
    sim_too_long_rate: SimTooLong = None,
    seed: Seed = None,
    redis_url: RedisUrl = None,
    broker_url: Annotated[str | None, typer.Option(envvar="MAKER_BROKER_URL", help="Celery broker [redis-url]")] = None,
    max_samples: Annotated[int, typer.Option(min=1, help="a step undecided after this many samples fails")] = 200,
    max_red_flags: Annotated[int, typer.Option(min=1, help="a step with this many red flags fails")] = 100,
    max_errors: Annotated[int, typer.Option(min=1, help="a step with this many failed provider calls fails")] = 20,
    speculate: Annotated[int, typer.Option(min=0, help="also vote this many steps ahead, on the leading answer")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as one JSON line on stdout")] = False,
    trace: Annotated[Path | None, typer.Option(help="write one JSON line per committed step here")] = None,
    resume: Annotated[
        str | None, typer.Option(metavar="RUN_ID", help="go on with this run from its checkpoint (needs --redis-url)")
    ] = None,
) -> None:
    """Solve Towers of Hanoi with MAKER, one voted LLM call per move. Exit 0 only if solved with no error."""
    sim_flags = {
        "error_rate": sim_error_rate,
        "latency_ms": sim_latency_ms,
        "seed": seed,
        "malformed_rate": sim_malformed_rate,
        "too_long_rate": sim_too_long_rate,
    }
    if redis_url and any(v is not None for v in sim_flags.values()):
        fail(
            "--sim-* and --seed configure the embedded simulated LLM; with --redis-url the cluster's workers "
            "use their own provider (set MAKER_BASE_URL on the workers and flags on their sim-llm server)"
        )
    if resume and not redis_url:
        fail("--resume needs --redis-url: the embedded Redis lives only as long as its run")
    if max_samples < k:
        fail(f"--max-samples ({max_samples}) is below --k ({k}): no step could ever be decided; raise --max-samples")
    voting = VotingConfig(
        k=k, max_samples=max_samples, max_red_flags=max_red_flags, max_errors=max_errors, speculate=speculate
    )
    try:
        report = _run_hanoi(
            disks, voting, workers, concurrency, sim_config(**sim_flags), redis_url, broker_url, trace, resume
        )
    except KeyboardInterrupt:
        err.print("interrupted: the embedded cluster was shut down")
        raise typer.Exit(130) from None
    except ConfigError as exc:
        fail(str(exc))
    except MakerError as exc:
        fail(str(exc), code=1)
    _print_report(report, json_out)
    raise typer.Exit(0 if report.solved and report.errors == 0 else 1)


def _run_hanoi(
    disks: int,
    voting: VotingConfig,
    workers: int,
    concurrency: int,
    sim: SimConfig,
    redis_url: str | None,
    broker_url: str | None,
    trace: Path | None,
    resume: str | None,
) -> RunReport:
    with contextlib.ExitStack() as stack:
        health = lambda: None  # noqa: E731
        if redis_url is None:
            cluster = stack.enter_context(Embedded(workers=workers, concurrency=concurrency, sim=sim))
            redis_url, health = cluster.redis_url, cluster.check
            err.print(
                f"embedded cluster up: redis {redis_url}, sim-llm {cluster.sim_url}, "
                f"{workers} workers x {concurrency} threads",
                highlight=False,
            )
        client = connect(redis_url)
        runner = Runner(
            client,
            make_app(broker_url or redis_url),
            voting,
            run_id=resume,
            health_check=health,
            on_stall=lambda silent: err.print(
                f"[yellow]warning:[/] no worker has answered for {silent:.0f} s; are workers running against "
                f"this broker ({broker_url or redis_url}), queue 'maker'? Waiting on.",
                highlight=False,
            ),
        )
        scorer = Scorer(disks)
        if resume:
            if not runner.exists():
                raise MakerError(f"no run {resume} in the Redis at {redis_url}: check the run id and --redis-url")
            saved = runner.saved()
            if saved is not None:
                scorer.replay(runner.committed_moves(), saved.state)
                err.print(f"resuming run {resume} at step {saved.step}", highlight=False)
        trace_file = stack.enter_context(trace.open("a" if resume else "w")) if trace else None
        progress = stack.enter_context(StepProgress(err, total=2**disks - 1, completed=scorer.steps))

        def on_commit(step: CommittedStep) -> None:
            scorer.observe(step)
            progress.advance(step)
            if trace_file:
                trace_file.write(
                    json.dumps(
                        {
                            "step": step.step,
                            "move": list(step.move),
                            "next_state": step.next_state,
                            "samples": step.samples,
                            "votes": step.votes,
                            "tally": [step.winner_votes, step.runner_up_votes],
                        }
                    )
                    + "\n"
                )

        started = time.perf_counter()
        failure = None
        try:
            runner.run(disks, on_commit)
        except (StepFailed, ClusterFailed) as exc:  # the run ends; its report still says how far it got
            failure = str(exc)
        return RunReport.build(runner.run_id, voting.k, scorer, runner.stats(), time.perf_counter() - started, failure)


def connect(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise MakerError(f"cannot reach Redis at {url}: {exc}; check --redis-url / MAKER_REDIS_URL") from exc
    return client


def _print_report(report: RunReport, json_out: bool) -> None:
    if report.failure:
        err.print(f"[bold red]run failed:[/] {report.failure}", highlight=False)
    if report.temperature_omitted:
        err.print("note: the model refused a temperature parameter; its samples used the model's default")
    if json_out:
        print(report.model_dump_json())
        return
    verdict = "solved" if report.solved and report.errors == 0 else "NOT solved"
    print(f"{report.disks} disks, {report.steps} steps: {verdict}, {report.errors} errors, k={report.k}")
    print(
        f"samples {report.samples}, red flags {report.red_flags} {report.red_flags_by_reason}, "
        f"late votes {report.late_votes}, max rounds {report.max_rounds}"
    )
    print(
        f"tokens in/out {report.input_tokens}/{report.output_tokens}, {report.wall_s:.1f} s, "
        f"{report.steps / max(report.wall_s, 1e-9):.1f} steps/s, run {report.run_id}"
    )


@sim_app.command("serve")
def sim_serve(
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0 picks a free one)")] = 8765,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    sim_error_rate: SimErrorRate = None,
    sim_latency_ms: SimLatency = None,
    sim_malformed_rate: SimMalformed = None,
    sim_too_long_rate: SimTooLong = None,
    sim_collision_share: Annotated[float | None, typer.Option(help="of wrong answers: the plausible one [0.8]")] = None,
    sim_corrupt_share: Annotated[float | None, typer.Option(help="of wrong answers: corrupt next_state [0.1]")] = None,
    seed: Seed = None,
) -> None:
    """Serve the simulated LLM: POST /v1/chat/completions, GET /health."""
    config = sim_config(
        error_rate=sim_error_rate,
        latency_ms=sim_latency_ms,
        seed=seed,
        malformed_rate=sim_malformed_rate,
        too_long_rate=sim_too_long_rate,
        collision_share=sim_collision_share,
        corrupt_share=sim_corrupt_share,
    )
    try:
        server = SimServer(host, port, config)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
    print(f"{SIM_READY} {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def bench(
    disks: Annotated[int, typer.Option(min=1, max=20)] = 10,
    k: Annotated[int, typer.Option(min=1)] = 3,
    workers: Annotated[int, typer.Option(min=1)] = 2,
    concurrency: Annotated[int, typer.Option(min=1)] = 8,
    noop_tasks: Annotated[int, typer.Option(min=100, help="no-op tasks for the baseline")] = 5000,
    speculate: Annotated[int, typer.Option(min=0, help="steps to vote on ahead of the committed one")] = 0,
    redis_url: RedisUrl = None,
) -> None:
    """Engine overhead vs a bare no-op Celery task, same broker and workers, zero simulated latency."""
    from orchestrator.bench import run_bench

    try:
        run_bench(disks, k, workers, concurrency, noop_tasks, redis_url, speculate)
    except MakerError as exc:
        fail(str(exc), code=1)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
