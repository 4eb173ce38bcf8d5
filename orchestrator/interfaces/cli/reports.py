"""`maker report`, `maker audit`, `maker status`, `maker samples` and `maker watch`: runs seen from Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:  # the rest loads in the command that needs it, so `maker --help` and `--version` stay quick
    import redis


from orchestrator.interfaces.cli.common import _run_id, app, err, fail, guarded


@app.command()
def report(
    run_ids: Annotated[
        list[str] | None, typer.Argument(metavar="RUN_ID", help="runs to read from the Redis at --redis-url")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(envvar="MAKER_REDIS_URL", help="the Redis the runs are in")] = None,
    trace: Annotated[list[Path] | None, typer.Option(metavar="FILE", help="a run's --trace file (repeatable)")] = None,
    out: Annotated[Path, typer.Option(help="the HTML page to write")] = Path("maker-report.html"),
) -> None:
    """One self-contained HTML page of runs' figures and plots, from their Redis or their --trace files.

    Give runs of several sizes to see the samples they took against the c·s·ln s curve.
    """
    from orchestrator.reports.html_report import write_report  # matplotlib loads only for this command

    runs = guarded(lambda: write_report(out, run_ids or [], trace or [], redis_url))
    print(f"wrote {out} ({', '.join(run.label for run in runs)})")


@app.command()
def audit(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="the run to check")],
    redis_url: Annotated[str | None, typer.Option(envvar="MAKER_REDIS_URL", help="the Redis the run is in")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the audit as one JSON line on stdout")] = False,
) -> None:
    """Check a run from its Redis alone: one answer per committed step, each sample counted once, each winner
    ahead by k among the votes of exactly its input. Exit 0 when clean, 1 on any violation."""
    from orchestrator.reports.audit import audit_url

    if redis_url is None:
        fail("maker audit reads the run from its Redis: give --redis-url URL (or MAKER_REDIS_URL)")
    checked = guarded(lambda: audit_url(redis_url, run_id))
    if json_out:
        print(checked.model_dump_json())
    else:
        for line in checked.lines():
            print(line)
    raise typer.Exit(0 if checked.ok else 1)


def _runs_redis(command: str, redis_url: str | None) -> redis.Redis:
    """The Redis `maker status` or `maker watch` reads the runs from."""
    from orchestrator.cluster.connect import connect

    if redis_url is None:
        fail(f"maker {command} reads runs from their Redis: give --redis-url URL (or MAKER_REDIS_URL)")
    return guarded(lambda: connect(redis_url))


@app.command()
def status(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN_ID]", callback=_run_id, help="one run; without it, every run")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(envvar="MAKER_REDIS_URL", help="the Redis the runs are in")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the reading(s) as one JSON line")] = False,
) -> None:
    """Where runs stand, read from their Redis: one line per run, or one run's state (steps, samples, red flags,
    rounds, k, cost, workers heard from). Works from any machine that reaches the Redis, during a run and after."""
    from orchestrator.reports import watch as runs

    client = _runs_redis("status", redis_url)
    if run_id is not None:
        one = guarded(lambda: runs.read_status(client, run_id))
        print(one.model_dump_json() if json_out else "\n".join(runs.lines(one)))
        return
    every = guarded(lambda: runs.all_status(client))
    if json_out:
        print(json.dumps([reading.model_dump(mode="json") for reading in every]))
        return
    for reading in every:
        print(runs.one_line(reading))
    if not every:
        print("no runs in this Redis")


@app.command("samples")
def samples_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", callback=_run_id, help="the run whose samples to list")],
    step: Annotated[int | None, typer.Option(min=0, help="only this step's samples")] = None,
    red_flags: Annotated[bool, typer.Option("--red-flags", help="only the answers thrown away")] = False,
    redis_url: Annotated[str | None, typer.Option(envvar="MAKER_REDIS_URL", help="the Redis the run is in")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per sample, one per line")] = False,
) -> None:
    """What the model said: each sample's text (its first characters), verdict (vote, red_flag, late, error) and
    reason, read from the run's events in its Redis (a long run's stream keeps its latest samples)."""
    from maker_workers.connections import redact
    from orchestrator.engine.store import RunStore
    from orchestrator.reports import samples as said

    client = _runs_redis("samples", redis_url)
    if guarded(lambda: RunStore(client, run_id).task()) is None:
        fail(f"no run {run_id} in the Redis at {redact(redis_url or '')}: check the run id and --redis-url")
    found = 0
    for sample in guarded(lambda: list(said.samples(client, run_id, step=step, red_flags=red_flags))):
        found += 1
        if json_out:
            print(sample.model_dump_json(exclude_none=True))
            continue
        verdict = sample.answer if sample.verdict in ("vote", "late") else sample.reason
        copy = " (a copy)" if sample.repeated else ""
        why = f" ({sample.detail})" if sample.detail else ""
        print(f"step {sample.step} {sample.sample[:12]} {sample.verdict}{copy}: {verdict}{why}")
        if sample.text:
            print("    " + sample.text.replace("\n", "\n    "))
    if not found and not json_out:
        err.print("no samples found (the run's events hold none of this kind)", highlight=False)


@app.command()
def watch(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", callback=_run_id, help="the run to watch")],
    redis_url: Annotated[str | None, typer.Option(envvar="MAKER_REDIS_URL", help="the Redis the run is in")] = None,
    once: Annotated[bool, typer.Option("--once", help="draw one frame and exit")] = False,
) -> None:
    """A live view of a run from its Redis (steps/s, ETA, samples, red flags, rounds, k, cost, workers heard from,
    the last events), until the run ends; from any machine that reaches the Redis. Exit 1 if it ended failed."""
    from orchestrator.reports import watch as runs

    client = _runs_redis("watch", redis_url)

    def view() -> runs.RunStatus | None:
        try:
            return runs.watch(client, run_id, Console(), once=once)
        except KeyboardInterrupt:  # ends the view, not the run
            return None

    last = guarded(view)
    raise typer.Exit(1 if last and last.state in (runs.RunState.FAILED, runs.RunState.CANCELLED) else 0)
