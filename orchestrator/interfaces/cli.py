"""The `maker` command line: run Hanoi or any task spec, take one vote, serve the simulated LLM, benchmark."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO, TypeVar

import typer
from rich.console import Console

from maker_workers.domains.base import DEFAULT_THRESHOLD
from maker_workers.simllm.profiles import PROFILES

if TYPE_CHECKING:  # the rest loads in the command that needs it, so `maker --help` and `--version` stay quick
    import redis

    from maker_workers.domains.spec import AnswerSpec
    from maker_workers.simllm.model import SimConfig
    from orchestrator.cluster.connect import Cluster, ClusterOptions
    from orchestrator.cluster.model_options import ModelOptions
    from orchestrator.engine.runner import CommittedStep, VotingConfig
    from orchestrator.interfaces.api import Hooks
    from orchestrator.planning.calibrate import Calibration
    from orchestrator.reports.phrasings import Candidate
    from orchestrator.reports.progress import ProgressLog, StepProgress
    from orchestrator.reports.report import RunCounts
    from orchestrator.reports.samples import Sample

T = TypeVar("T")
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
sim_app = typer.Typer(no_args_is_help=True, help="The simulated LLM (OpenAI-compatible HTTP).")


def _print_version(given: bool) -> None:
    if given:
        from orchestrator import VERSION

        print(f"maker {VERSION}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print maker's version and exit"),
    ] = False,
) -> None:
    """Long LLM tasks of dependent steps with zero errors: MAKER on Celery and Redis."""


app.add_typer(sim_app, name="sim-llm")
err = Console(stderr=True, soft_wrap=True)  # a line is whole in a log: the terminal wraps it, not rich

SimErrorRate = Annotated[float | None, typer.Option(help="share of well-formed answers that are wrong [0.01]")]
SimLatency = Annotated[float | None, typer.Option(help="mean simulated LLM latency in ms [0]")]
Seed = Annotated[int | None, typer.Option(help="seed of the simulated LLM [0]")]
SimMalformed = Annotated[float | None, typer.Option(help="share of malformed answers [0.01]")]
SimTooLong = Annotated[float | None, typer.Option(help="share of over-long answers [0.005]")]
SimProfile = Annotated[
    str | None,
    typer.Option(help=f"simulate a measured model ({', '.join(PROFILES)}); --sim-* flags override it [none]"),
]
SimInprocess = Annotated[
    bool,
    typer.Option(
        "--sim-inprocess",
        help="serve the simulated LLM inside each embedded worker instead of over HTTP (less CPU per sample)",
    ),
]
SimLatencyScale = Annotated[
    float | None, typer.Option(help="multiply the simulated latency, e.g. 0.01 for a profile in tests [1]")
]
RedisUrl = Annotated[
    str | None,
    typer.Option(envvar="MAKER_REDIS_URL", help="use this cluster's Redis and workers instead of the embedded one"),
]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def sim_config(**given: float | int | str | None) -> SimConfig:
    """The simulated LLM's config from the flags the user gave; unknown values keep their defaults."""
    from pydantic import ValidationError

    from maker_workers.simllm.model import SimConfig

    try:
        return SimConfig(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"--sim-{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        fail(f"bad simulated-LLM setting: {problems}")


MaxSamples = Annotated[int | None, typer.Option(min=1, help="a step undecided after this many samples fails [200]")]
MaxRedFlags = Annotated[int | None, typer.Option(min=1, help="a step with this many red flags fails [100]")]
MaxErrors = Annotated[int | None, typer.Option(min=1, help="a step with this many failed provider calls fails [20]")]
Workers = Annotated[int, typer.Option(min=1, help="embedded Celery worker processes")]
Concurrency = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="threads per embedded worker [8 for a simulated model with no latency, else 32]; 1 runs each task in "
        "the worker's own thread (Celery's solo pool), the fastest for a model with no latency",
    ),
]
BrokerUrl = Annotated[str | None, typer.Option(envvar="MAKER_BROKER_URL", help="Celery broker [redis-url]")]
LogEvery = Annotated[
    float,
    typer.Option(
        envvar="MAKER_LOG_EVERY_S",
        min=0.1,
        help="where stderr is no terminal (a log): one progress line this often, in seconds",
    ),
]
LogFormat = Annotated[
    str, typer.Option(envvar="MAKER_LOG_FORMAT", help="where stderr is no terminal: text, or json (one object a line)")
]
LaterTemperature = Annotated[
    float | None,
    typer.Option(
        min=0,
        max=2,
        help="the temperature of a step's samples after its first (the lever against copies: a model near T=0 "
        "repeats itself) [spec's, else 0.1]",
    ),
]
Speculate = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="vote this many steps ahead on the leading answer (0: off), within --max-waste [adaptive, up to 32]",
    ),
]
MaxWaste = Annotated[
    float | None,
    typer.Option(
        min=0,
        max=1,
        help="speculation and hedging never let the share of samples wasted (dropped guesses, hedges, late "
        "replacements) pass this; 1: no cap [0.05 on a model with a price, no cap on one without]",
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="print the report as one JSON line on stdout")]
Trace = Annotated[Path | None, typer.Option(help="write one JSON line per committed step here")]
TraceSamples = Annotated[
    bool,
    typer.Option(
        "--trace-samples", help="with --trace: each line lists the step's samples (text, verdict, reason) as `said`"
    ),
]
ProviderName = Annotated[
    str | None, typer.Option("--provider", help="sim, openai (any OpenAI-compatible server), anthropic or ollama [sim]")
]
ModelName = Annotated[
    str | None, typer.Option("--model", help="the model to call; several, comma-separated, take turns [sim-hanoi]")
]
BaseUrl = Annotated[str | None, typer.Option("--base-url", help="the provider's base URL (vLLM, LM Studio, ...)")]
Rpm = Annotated[float | None, typer.Option("--rpm", help="requests a minute to each model, shared by all workers")]
Tpm = Annotated[float | None, typer.Option("--tpm", help="tokens a minute to each model, shared by all workers")]
Ensemble = Annotated[
    str | None,
    typer.Option(help="models that take turns, pooling votes: openai:gpt-4.1-mini,anthropic:claude-haiku-4-5"),
]
PriceIn = Annotated[float | None, typer.Option(help="$ per million input tokens (instead of the price table)")]
PriceOut = Annotated[float | None, typer.Option(help="$ per million output tokens (with --price-in)")]
PriceCached = Annotated[
    float | None,
    typer.Option(help="$ per million input tokens read from the provider's prompt cache (with --price-in) [input's]"),
]
NoPromptCache = Annotated[
    bool,
    typer.Option(
        "--no-prompt-cache",
        help="anthropic: never mark the system prompt for the provider's prompt cache (marked by default where it "
        "is long enough to be cached: about 1,024 tokens, 2,048 for Haiku)",
    ),
]
MaxCost = Annotated[
    float | None, typer.Option("--max-cost-usd", help="stop sending samples once the run has spent this much")
]
MetricsPort = Annotated[
    int, typer.Option(min=0, max=65535, help="serve the run's Prometheus metrics on this port while it goes (0: none)")
]


def _run_id(value: str | None) -> str | None:
    """A run id is part of its Redis keys: one that would break them is refused before anything starts."""
    if value is None:
        return None
    from maker_workers import keys
    from maker_workers.errors import ConfigError

    try:
        return keys.check_run_id(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


Resume = Annotated[
    str | None,
    typer.Option(
        metavar="RUN_ID", callback=_run_id, help="go on with this run from its checkpoint (needs --redis-url)"
    ),
]


def cluster_options(
    redis_url: str | None,
    broker_url: str | None,
    workers: int,
    concurrency: int | None,
    sim_flags: dict[str, float | int | str | None],
    models: ModelOptions,
    resume: str | None = None,
    max_cost_usd: float | None = None,
) -> ClusterOptions:
    """The cluster from the flags; flags that cannot apply to the chosen cluster are refused, and the
    embedded workers' models are checked (provider, model, API key, price) before anything starts."""
    from orchestrator.cluster.connect import ClusterOptions

    sim_given = any(v is not None for v in sim_flags.values())
    if redis_url and sim_given:
        fail(
            "--sim-* and --seed configure the embedded simulated LLM; with --redis-url the cluster's workers "
            "use their own provider (set MAKER_BASE_URL on the workers and flags on their sim-llm server)"
        )
    if redis_url and models.given():
        fail(
            f"{', '.join(models.given())}: with --redis-url the cluster's workers call the model their own "
            "settings name; set MAKER_PROVIDER, MAKER_MODEL, MAKER_BASE_URL, MAKER_ENSEMBLE, "
            "MAKER_RATE_LIMIT_PER_MINUTE, MAKER_TOKENS_PER_MINUTE, MAKER_PRICE_IN/OUT, MAKER_PROMPT_CACHE on the "
            "workers"
        )
    if resume and not redis_url:
        fail("--resume needs --redis-url: the embedded Redis lives only as long as its run")
    if not redis_url:
        if sim_given and not models.needs_sim:
            fail("--sim-* and --seed configure the simulated LLM, which this run does not call")
        members = guarded(models.check)
        unpriced = [m.label for m in members if m.price is None]
        if max_cost_usd is not None and unpriced:
            fail(
                f"--max-cost-usd needs prices, and {', '.join(unpriced)} is not in the price table: "
                "give --price-in and --price-out"
            )
    return ClusterOptions(
        redis_url=redis_url,
        broker_url=broker_url,
        workers=workers,
        concurrency=concurrency,
        sim=sim_config(**sim_flags),
        models=models,
    )


def model_options(
    provider: str | None,
    model: str | None,
    base_url: str | None,
    rpm: float | None,
    tpm: float | None,
    ensemble: str | None,
    price_in: float | None,
    price_out: float | None,
    price_cached: float | None = None,
    no_prompt_cache: bool = False,
) -> ModelOptions:
    from pydantic import ValidationError

    from orchestrator.cluster.model_options import ModelOptions

    try:
        return ModelOptions(
            provider=provider,
            model=model,
            base_url=base_url,
            rpm=rpm,
            tpm=tpm,
            ensemble=ensemble,
            price_in=price_in,
            price_out=price_out,
            price_cached=price_cached,
            prompt_cache=False if no_prompt_cache else None,
        )
    except ValidationError as exc:
        fail("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors()))


def voting_config(make: Callable[[], VotingConfig]) -> VotingConfig:
    from pydantic import ValidationError

    try:
        return make()
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
            if e["loc"]
            else f"{e['msg'].removeprefix('Value error, ')}; raise --max-samples to at least --k"
            for e in exc.errors()
        )
        fail(problems)


def _open_trace(trace: Path, resume: str | None) -> TextIO:
    """The --trace file, appended to when resuming; one that cannot be written is one message, before anything
    starts."""
    try:
        return trace.open("a" if resume else "w")
    except OSError as exc:
        fail(f"--trace {trace}: cannot write it ({exc.strerror}); does its folder exist?")


class Display:
    """The CLI's side of a run: the cluster line, resume line, progress bar, trace file, stall warning and the
    metrics server (`metrics_port`), started before the cluster so a taken port costs nothing."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        total: int | None,
        trace: Path | None,
        resume: str | None,
        metrics_port: int = 0,
        log: tuple[float, str] = (10.0, "text"),
    ):
        """`log`: every how many seconds a line goes to stderr when it is no terminal, and in which format."""
        from orchestrator.cluster.metrics import RunMetrics

        self.stack = stack
        self.log_every, self.log_format = log
        self.total = total
        self.trace = stack.enter_context(_open_trace(trace, resume)) if trace else None
        self.progress: StepProgress | ProgressLog | None = None
        self.broker = ""
        self.metrics = guarded(lambda: RunMetrics(metrics_port)) if metrics_port else None
        if self.metrics is not None:
            stack.callback(self.metrics.close)

    def hooks(self, trace_line: Callable[[CommittedStep], dict]) -> Hooks:
        from maker_workers.connections import redact
        from orchestrator.cluster.embedded import pool_for
        from orchestrator.interfaces.api import Hooks
        from orchestrator.reports.progress import ProgressLog, StepProgress

        def on_cluster(cluster: Cluster) -> None:
            _RUNNING["embedded"] = cluster.embedded is not None
            self.broker = cluster.broker_url
            embedded = cluster.embedded
            if embedded is not None:
                models = embedded.models
                if embedded.sim_url:
                    calls = f"sim-llm {embedded.sim_url}"
                elif models.needs_sim:
                    calls = "sim-llm in each worker"
                else:
                    calls = f"model {models.ensemble or f'{models.provider}:{models.model}'}"
                threads = f"{embedded.concurrency} thread(s), {pool_for(embedded.concurrency)} pool"
                err.print(
                    f"embedded cluster up: redis {cluster.redis_url}, {calls}, {embedded.workers} workers x {threads}",
                    highlight=False,
                )
                if embedded.metrics_ports:
                    ports = ", ".join(map(str, embedded.metrics_ports))
                    err.print(f"worker metrics on ports {ports}", highlight=False)

        def on_start(run_id: str, steps_done: int) -> None:
            _RUNNING["run_id"] = run_id
            if err.is_terminal:
                self.progress = self.stack.enter_context(StepProgress(err, total=self.total, completed=steps_done))
            else:
                log = ProgressLog(sys.stderr, self.total, steps_done, self.log_every, self.log_format == "json")
                self.progress = self.stack.enter_context(log)

        def on_step(step: CommittedStep) -> None:
            if self.progress:
                self.progress.advance(step)
            if self.metrics:
                self.metrics.step(step)
            if self.trace:
                self.trace.write(json.dumps(trace_line(step)) + "\n")

        def on_stall(silent: float) -> None:
            err.print(
                f"[yellow]warning:[/] no worker has answered for {silent:.0f} s; are workers running against "
                f"this broker ({redact(self.broker)}), queue 'maker'? Waiting on.",
                highlight=False,
            )

        def on_warning(message: str) -> None:
            if isinstance(self.progress, ProgressLog):
                self.progress.warn(message)
            else:
                err.print(f"[yellow]warning:[/] {message}", highlight=False)

        return Hooks(
            on_warning=on_warning,
            on_cluster=on_cluster,
            on_resume=lambda saved: err.print(f"resuming at step {saved.step}", highlight=False),
            on_start=on_start,
            on_step=on_step,
            on_stall=on_stall,
            on_runner=self.metrics.watch if self.metrics else lambda _: None,
            on_tick=_tick,
        )


def _sim_flags(
    error_rate: float | None,
    latency_ms: float | None,
    malformed: float | None,
    too_long: float | None,
    seed: int | None,
    profile: str | None = None,
    latency_scale: float | None = None,
) -> dict[str, float | int | str | None]:
    return {
        "error_rate": error_rate,
        "latency_ms": latency_ms,
        "seed": seed,
        "malformed_rate": malformed,
        "too_long_rate": too_long,
        "profile": profile,
        "latency_scale": latency_scale,
    }


def _trace_line(step: CommittedStep, **specific: Any) -> dict:
    """One line of --trace: the task's own fields, then how the step was decided."""
    return {
        "step": step.step,
        **specific,
        "samples": step.samples,
        "votes": step.votes,
        "tally": [step.winner_votes, step.runner_up_votes],
        **_decided_how(step),
    }


def _decided_how(step: CommittedStep) -> dict:
    """What `maker report` plots from a trace: rounds of sampling, red flags, k, and the run's spend so far; the
    votes that were copies; with --trace-samples, what each sample said."""
    said = {} if step.said is None else {"said": [s.model_dump(exclude_none=True) for s in step.said]}
    how = {"rounds": step.rounds, "red_flags": step.red_flags, "k": step.k, "spent_usd": step.spent_usd}
    return how | {"copies": step.copies} | said


def _log(every_s: float, form: str) -> tuple[float, str]:
    if form not in ("text", "json"):
        fail(f"--log-format {form!r}: use text or json (MAKER_LOG_FORMAT)")
    return every_s, form


def _check_trace(trace: Path | None, trace_samples: bool) -> None:
    if trace_samples and trace is None:
        fail("--trace-samples adds each step's samples to the --trace file: give --trace FILE too")


def _with_display(
    total: int | None,
    trace: Path | None,
    resume: str | None,
    trace_line: Callable[[CommittedStep], dict],
    call: Callable[[Hooks], T],
    metrics_port: int = 0,
    log: tuple[float, str] = (10.0, "text"),
) -> T:
    """Run `call` with the CLI's hooks (progress, trace, warnings, metrics); the display closes when it returns."""
    with contextlib.ExitStack() as stack:
        hooks = Display(stack, total, trace, resume, metrics_port, log).hooks(trace_line)
        return guarded(lambda: call(hooks))


_RUNNING: dict[str, Any] = {}  # the run this command drives, once known: what an interrupt says


def _after_interrupt() -> str:
    run_id = _RUNNING.get("run_id")
    if _RUNNING.get("embedded", True):
        return "the embedded cluster was shut down" + (f" (run {run_id} went with its Redis)" if run_id else "")
    if run_id is None:
        return "nothing was started"
    return f"run {run_id} stopped sending samples; go on with --resume {run_id} and the same --redis-url"


def guarded(call: Callable[[], T]) -> T:
    """Run a command's work: Ctrl-C, bad input and failures each get their exit code and one message."""
    from maker_workers.errors import ConfigError, MakerError

    try:
        return call()
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args else signal.SIGINT
        err.print(f"interrupted ({signal.Signals(signum).name}): {_after_interrupt()}", highlight=False)
        raise typer.Exit(128 + signum) from None
    except ConfigError as exc:
        fail(str(exc))
    except MakerError as exc:
        fail(str(exc), code=1)


TargetReliability = Annotated[
    float | None,
    typer.Option(help="pick the least k making the whole run right with this chance (with --p or a calibration)"),
]
ValidP = Annotated[float | None, typer.Option("--p", help="the chance one valid sample is right, in (0.5, 1]")]
AdaptiveK = Annotated[
    bool,
    typer.Option("--adaptive-k", help="raise k for the remaining steps when the votes say the target is no longer met"),
]
FromCalibration = Annotated[
    Path | None, typer.Option(metavar="FILE", help="a `maker calibrate --out` file: its p and its interval")
]


def _adaptive(adaptive_k: bool, target: float | None) -> bool:
    if adaptive_k and target is None:
        fail("--adaptive-k keeps a run at --target-reliability T: give the target too")
    return adaptive_k


def _calibrated_spread(calibration: Path | None) -> tuple[float, float] | None:
    """The Beta of per-step p --from-calibration measured, if any: the run's live reading is capped by it."""
    from orchestrator.planning.plan import load_calibration, spread_of

    return None if calibration is None else spread_of(guarded(lambda: load_calibration(calibration)))


def _target_k(
    k: int | None, target: float | None, p: float | None, calibration: Path | None, steps: int | None
) -> int | None:
    """--k, or the k --target-reliability picks from --p or --from-calibration (said on stderr)."""
    from orchestrator.planning.plan import target_k

    chosen = guarded(lambda: target_k(target, steps, p=p, calibration=calibration, k=k))
    if chosen is None:
        return k
    err.print(chosen[1], highlight=False)
    return chosen[0]


@app.command()
def hanoi(
    disks: Annotated[int, typer.Option(min=1, max=30, help="number of disks; the run has 2^N - 1 steps")] = 10,
    k: Annotated[int | None, typer.Option(min=1, help="votes the winner needs ahead of the runner-up [3]")] = None,
    workers: Workers = 2,
    concurrency: Concurrency = None,
    sim_error_rate: SimErrorRate = None,
    sim_latency_ms: SimLatency = None,
    sim_malformed_rate: SimMalformed = None,
    sim_too_long_rate: SimTooLong = None,
    sim_profile: SimProfile = None,
    sim_latency_scale: SimLatencyScale = None,
    seed: Seed = None,
    redis_url: RedisUrl = None,
    broker_url: BrokerUrl = None,
    provider: ProviderName = None,
    model: ModelName = None,
    base_url: BaseUrl = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    ensemble: Ensemble = None,
    price_in: PriceIn = None,
    price_out: PriceOut = None,
    price_cached: PriceCached = None,
    no_prompt_cache: NoPromptCache = False,
    max_cost_usd: MaxCost = None,
    max_samples: MaxSamples = None,
    max_red_flags: MaxRedFlags = None,
    max_errors: MaxErrors = None,
    speculate: Speculate = None,
    max_waste: MaxWaste = None,
    later_temperature: LaterTemperature = None,
    json_out: JsonOut = False,
    trace: Trace = None,
    trace_samples: TraceSamples = False,
    resume: Resume = None,
    target_reliability: TargetReliability = None,
    p: ValidP = None,
    from_calibration: FromCalibration = None,
    adaptive_k: AdaptiveK = False,
    metrics_port: MetricsPort = 0,
    log_every: LogEvery = 10.0,
    log_format: LogFormat = "text",
    sim_inprocess: SimInprocess = False,
) -> None:
    """Solve Towers of Hanoi with MAKER, one voted LLM call per move. Exit 0 only if solved with no error."""
    from orchestrator import api
    from orchestrator.engine.runner import VotingConfig

    k = _target_k(k, target_reliability, p, from_calibration, 2**disks - 1) or VotingConfig().k
    sim_flags = _sim_flags(
        sim_error_rate, sim_latency_ms, sim_malformed_rate, sim_too_long_rate, seed, sim_profile, sim_latency_scale
    )
    models = model_options(
        provider, model, base_url, rpm, tpm, ensemble, price_in, price_out, price_cached, no_prompt_cache
    )
    cluster = cluster_options(redis_url, broker_url, workers, concurrency, sim_flags, models, resume, max_cost_usd)
    if sim_inprocess:
        if redis_url or not models.needs_sim:
            fail("--sim-inprocess puts the embedded simulated LLM in the embedded workers: not with --redis-url")
        cluster = cluster.model_copy(update={"sim_inprocess": True})
    caps = {
        "max_samples": max_samples,
        "max_red_flags": max_red_flags,
        "max_errors": max_errors,
        "max_cost_usd": max_cost_usd,
        "target_reliability": target_reliability,
        "later_temperature": later_temperature,
        "max_waste": max_waste,
    }
    _check_trace(trace, trace_samples)
    voting = voting_config(
        lambda: VotingConfig(
            k=k,
            speculate=speculate,
            adaptive_k=_adaptive(adaptive_k, target_reliability),
            trace_samples=trace_samples,
            calibrated_spread=_calibrated_spread(from_calibration),
            **{name: v for name, v in caps.items() if v is not None},
        )
    )

    def trace_line(step: CommittedStep) -> dict:
        return {
            "step": step.step,
            "move": step.answer["move"],
            "next_state": step.next_state,
            "samples": step.samples,
            "votes": step.votes,
            "tally": [step.winner_votes, step.runner_up_votes],
            **_decided_how(step),
        }

    with contextlib.ExitStack() as stack:
        display = Display(stack, 2**disks - 1, trace, resume, metrics_port, _log(log_every, log_format))
        hooks = display.hooks(trace_line)
        report = guarded(lambda: api.run_hanoi(disks, voting=voting, cluster=cluster, run_id=resume, hooks=hooks))
    _print_failure(report)
    if json_out:
        print(report.model_dump_json())
    else:
        verdict = "solved" if report.solved and report.errors == 0 else "NOT solved"
        print(f"{report.disks} disks, {report.steps} steps: {verdict}, {report.errors} errors, k={report.k}")
        _print_counts(report)
    raise typer.Exit(0 if report.solved and report.errors == 0 else 1)


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="the task spec, YAML or JSON (see examples/)")],
    k: Annotated[
        int | None, typer.Option(min=1, help="votes the winner needs ahead of the runner-up [spec, 3]")
    ] = None,
    workers: Workers = 2,
    concurrency: Concurrency = None,
    sim_error_rate: SimErrorRate = None,
    sim_latency_ms: SimLatency = None,
    sim_malformed_rate: SimMalformed = None,
    sim_too_long_rate: SimTooLong = None,
    sim_profile: SimProfile = None,
    sim_latency_scale: SimLatencyScale = None,
    seed: Seed = None,
    redis_url: RedisUrl = None,
    broker_url: BrokerUrl = None,
    provider: ProviderName = None,
    model: ModelName = None,
    base_url: BaseUrl = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    ensemble: Ensemble = None,
    price_in: PriceIn = None,
    price_out: PriceOut = None,
    price_cached: PriceCached = None,
    no_prompt_cache: NoPromptCache = False,
    max_cost_usd: MaxCost = None,
    max_samples: MaxSamples = None,
    max_red_flags: MaxRedFlags = None,
    max_errors: MaxErrors = None,
    speculate: Speculate = None,
    max_waste: MaxWaste = None,
    later_temperature: LaterTemperature = None,
    json_out: JsonOut = False,
    trace: Trace = None,
    trace_samples: TraceSamples = False,
    resume: Resume = None,
    target_reliability: TargetReliability = None,
    p: ValidP = None,
    from_calibration: FromCalibration = None,
    adaptive_k: AdaptiveK = False,
    metrics_port: MetricsPort = 0,
    log_every: LogEvery = 10.0,
    log_format: LogFormat = "text",
) -> None:
    """Carry out a task written as a spec, one voted LLM call per step. Exit 0 only if its done condition is met."""
    from orchestrator import api

    sim_flags = _sim_flags(
        sim_error_rate, sim_latency_ms, sim_malformed_rate, sim_too_long_rate, seed, sim_profile, sim_latency_scale
    )
    models = model_options(
        provider, model, base_url, rpm, tpm, ensemble, price_in, price_out, price_cached, no_prompt_cache
    )
    cluster = cluster_options(redis_url, broker_url, workers, concurrency, sim_flags, models, resume, max_cost_usd)
    task = guarded(lambda: api.spec_task(spec))
    k = _target_k(k, target_reliability, p, from_calibration, task.total_steps() or task.max_steps)  # a bound: safe
    _check_trace(trace, trace_samples)
    voting = voting_config(
        lambda: api.voting_for(
            task.spec,
            k=k,
            max_samples=max_samples,
            max_red_flags=max_red_flags,
            max_errors=max_errors,
            speculate=speculate,
            max_waste=max_waste,
            max_cost_usd=max_cost_usd,
            target_reliability=target_reliability,
            adaptive_k=_adaptive(adaptive_k, target_reliability) or None,
            trace_samples=trace_samples or None,
            later_temperature=later_temperature,
            calibrated_spread=_calibrated_spread(from_calibration),
        )
    )

    report = _with_display(
        task.total_steps(),
        trace,
        resume,
        lambda step: _trace_line(step, state=step.state, answer=step.answer),
        lambda hooks: api.run_spec(task.spec, voting=voting, cluster=cluster, run_id=resume, hooks=hooks),
        metrics_port,
        _log(log_every, log_format),
    )
    _print_failure(report)
    if json_out:
        print(report.model_dump_json())
    else:
        verdict = "done" if report.done else "NOT done"
        print(f"task {report.task}: {verdict} after {report.steps} steps, k={report.k}")
        print(f"final state: {json.dumps(report.final_state)}")
        _print_counts(report)
        if report.semantic_rule is not None:
            print(f"votes on meaning: {report.semantic_rule.describe()}")
        _print_candidates(report.candidates)
    raise typer.Exit(0 if report.done else 1)


@app.command()
def vote(
    prompt: Annotated[str | None, typer.Option(help="the question, as the model will see it")] = None,
    prompt_file: Annotated[Path | None, typer.Option(help="read the question from this file")] = None,
    system: Annotated[str | None, typer.Option(help="a system message")] = None,
    answer_format: Annotated[str, typer.Option("--format", help="json, regex, text or hanoi")] = "text",
    schema: Annotated[str | None, typer.Option(help="JSON Schema for --format json (JSON text or a file)")] = None,
    pattern: Annotated[str | None, typer.Option(help="regex with named groups for --format regex")] = None,
    vote_on: Annotated[list[str] | None, typer.Option(help="a field that forms the vote key (repeatable)")] = None,
    match: Annotated[str, typer.Option(help="exact, or semantic: answers alike in meaning count together")] = "exact",
    threshold: Annotated[
        float | None,
        typer.Option(
            help="semantic: the cosine similarity that joins a candidate [sim: "
            f"{DEFAULT_THRESHOLD}; a real embedding model: measured on --meanings]"
        ),
    ] = None,
    embeddings: Annotated[
        str | None, typer.Option(help="semantic: the embedding model, openai:MODEL, ollama:MODEL or sim")
    ] = None,
    embeddings_base_url: Annotated[
        str | None, typer.Option(help="semantic: the embedding server's URL, when not the completion model's")
    ] = None,
    exact_field: Annotated[
        list[str] | None, typer.Option(help="semantic: a field that must still match exactly (repeatable)")
    ] = None,
    meanings: Annotated[
        Path | None,
        typer.Option(
            help="semantic: a JSON or YAML file of example answers grouped by meaning (a list of lists); the join "
            "rule is measured on them before the vote (needed for a real embedding model without --threshold)"
        ),
    ] = None,
    k: Annotated[int, typer.Option(min=1, help="votes the winner needs ahead of the runner-up")] = 3,
    max_samples: MaxSamples = None,
    max_red_flags: MaxRedFlags = None,
    max_errors: MaxErrors = None,
    max_output_tokens: Annotated[int | None, typer.Option(min=1, help="longer answers are red flags [750]")] = None,
    later_temperature: LaterTemperature = None,
    workers: Workers = 2,
    concurrency: Concurrency = None,
    sim_error_rate: SimErrorRate = None,
    sim_latency_ms: SimLatency = None,
    sim_malformed_rate: SimMalformed = None,
    sim_too_long_rate: SimTooLong = None,
    sim_profile: SimProfile = None,
    sim_latency_scale: SimLatencyScale = None,
    seed: Seed = None,
    redis_url: RedisUrl = None,
    broker_url: BrokerUrl = None,
    provider: ProviderName = None,
    model: ModelName = None,
    base_url: BaseUrl = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    ensemble: Ensemble = None,
    price_in: PriceIn = None,
    price_out: PriceOut = None,
    price_cached: PriceCached = None,
    no_prompt_cache: NoPromptCache = False,
    max_cost_usd: MaxCost = None,
    json_out: JsonOut = False,
    metrics_port: MetricsPort = 0,
) -> None:
    """One error-corrected decision: sample the question until one answer leads by k. Exit 0 only if decided."""
    from orchestrator import api
    from orchestrator.engine.runner import VotingConfig

    if (prompt is None) == (prompt_file is None):
        fail("give the question with exactly one of --prompt TEXT or --prompt-file FILE")
    if prompt_file is not None:
        try:
            prompt = prompt_file.read_text()
        except OSError as exc:
            fail(f"--prompt-file: cannot read {prompt_file}: {exc.strerror}")
        except UnicodeDecodeError:
            fail(f"--prompt-file: {prompt_file} is not UTF-8 text")
    assert prompt is not None
    sim_flags = _sim_flags(
        sim_error_rate, sim_latency_ms, sim_malformed_rate, sim_too_long_rate, seed, sim_profile, sim_latency_scale
    )
    models = model_options(
        provider, model, base_url, rpm, tpm, ensemble, price_in, price_out, price_cached, no_prompt_cache
    )
    cluster = cluster_options(redis_url, broker_url, workers, concurrency, sim_flags, models, None, max_cost_usd)
    semantic = {
        "match": match,
        "threshold": threshold,
        "embeddings": embeddings,
        "embeddings_base_url": embeddings_base_url,
        "exact_fields": exact_field,
        "meanings": None if meanings is None else _read_meanings(meanings),
    }
    answer = _answer_spec(answer_format, schema, pattern, vote_on, semantic)
    caps = {
        "max_samples": max_samples,
        "max_red_flags": max_red_flags,
        "max_errors": max_errors,
        "max_cost_usd": max_cost_usd,
        "later_temperature": later_temperature,
    }
    voting = voting_config(lambda: VotingConfig(k=k, **{name: v for name, v in caps.items() if v is not None}))
    result = _with_display(
        1,
        None,
        None,
        lambda step: {},
        lambda hooks: api.vote(
            prompt,
            system=system,
            answer=answer,
            voting=voting,
            cluster=cluster,
            max_output_tokens=max_output_tokens,
            hooks=hooks,
        ),
        metrics_port,
    )
    if result.failure:
        err.print(f"[bold red]no decision:[/] {result.failure}", highlight=False)
    if json_out:
        print(result.model_dump_json())
    else:
        if result.decided:
            print(f"winner: {json.dumps(result.winner)}  ({result.winner_votes} votes to {result.runner_up_votes})")
        else:
            print(f"nothing decided: {result.failure or 'no answer reached the margin'}")
        if result.candidates:
            _print_candidates({0: result.candidates}, per_step=False)
        else:
            for key, votes in result.tally.items():
                print(f"  {votes:4d}  {key}")
        tokens = _tokens(
            result.input_tokens, result.output_tokens, result.cached_input_tokens, result.cache_write_input_tokens
        )
        print(
            f"k={result.k}, samples {result.sample_count}, votes {result.votes}, red flags {result.red_flags} "
            f"{result.red_flags_by_reason}, {tokens}, cost {_dollars(result.cost_usd)}"
        )
        _print_embeddings(result.embedding_tokens, result.embedding_cost_usd)
        flagged: dict[str, Sample] = {}
        for sample in result.samples:
            if sample.verdict == "red_flag" and sample.reason:
                flagged.setdefault(sample.reason, sample)
        _print_examples(flagged)
    raise typer.Exit(0 if result.decided else 1)


def _read_meanings(path: Path) -> Any:
    """--meanings: the file's list of lists (checked with the answer format, which names what is wrong)."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        fail(f"--meanings: cannot read {path}: {exc.strerror}")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        fail(f"--meanings: {path} is not JSON or YAML: {exc}")


def _answer_spec(
    answer_format: str,
    schema: str | None,
    pattern: str | None,
    vote_on: list[str] | None,
    semantic: dict[str, Any],
) -> AnswerSpec:
    """The answer format from `maker vote`'s flags; problems are named by their flag."""
    from maker_workers.domains.spec import SpecError
    from orchestrator import api

    schema_value = None
    if schema is not None:
        text = schema
        if not schema.lstrip().startswith("{"):
            try:
                text = Path(schema).read_text()
            except OSError as exc:
                fail(f"--schema: neither JSON text nor a readable file ({exc.strerror})")
        try:
            schema_value = json.loads(text)
        except ValueError as exc:
            fail(f"--schema: not JSON: {exc}")
    given = {"format": answer_format, "schema": schema_value, "pattern": pattern, "vote_on": vote_on}
    given |= semantic
    try:
        return api.answer_spec({name: value for name, value in given.items() if value is not None})
    except SpecError as exc:
        message = str(exc).replace("answer.", "--").replace("--vote_on", "--vote-on")
        fail(
            message.replace("--exact_fields", "--exact-field").replace("--embeddings_base_url", "--embeddings-base-url")
        )


SHOWN_STEPS = 20  # the phrasings of at most this many steps are printed; --json has them all


def _print_candidates(steps: dict[int, list[Candidate]], per_step: bool = True) -> None:
    """Semantic matching: each step's candidates (of the one contest, without `per_step`), and the phrasings
    counted for each."""
    if not steps:
        return
    print("phrasings counted together (answer.match: semantic; the first of each is what a winner hands on)")
    for step, candidates in list(steps.items())[:SHOWN_STEPS]:
        for candidate in candidates:
            where = f"step {step}" if per_step else "candidate"
            print(f"  {where}: {candidate.votes} votes, {len(candidate.members)} phrasings")
            for member, votes in candidate.members.items():
                print(f"    {votes:4d}  {member}")
    if len(steps) > SHOWN_STEPS:
        print(f"  ... and {len(steps) - SHOWN_STEPS} more steps (--json lists them all)")


def _print_failure(report: RunCounts) -> None:
    if report.failure:
        err.print(f"[bold red]run failed:[/] {report.failure}", highlight=False)
    if report.failure_detail:
        err.print(report.failure_detail, highlight=False)
    if report.temperature_omitted:
        err.print("note: the model refused a temperature parameter; its samples used the model's default")


def _dollars(cost: float | None) -> str:
    return (
        "unknown (a model's price is not in the table: give --price-in/--price-out)" if cost is None else f"${cost:.4f}"
    )


def _print_embeddings(tokens: int, cost: float | None) -> None:
    if tokens:
        print(f"embeddings (semantic matching): {tokens} tokens, {_dollars(cost)} of the cost")


INDEPENDENT = 0.05  # below this correlation within a step, what several samples a step show is chance


def spread_lines(result: Calibration) -> list[str]:
    """What several samples a step showed, in plain words."""
    at = result.spread
    if at is None:
        return []
    lines = [
        f"across {at.steps} steps ({result.per_step} samples each, T={result.temperatures}): share right "
        f"p10 {at.p_p10:.2f}, p50 {at.p_p50:.2f}, p90 {at.p_p90:.2f}; {at.hard_steps} hard steps (right at most "
        f"half the time); correlation within a step {at.correlation:.2f}"
    ]
    alike = (
        "" if at.identical_share is None else f"; {at.identical_share:.0%} of later answers repeat a text byte for byte"
    )
    collide = "" if at.wrong_collisions is None else f"; {at.wrong_collisions:.0%} of wrong answers collide"
    lines.append(
        f"  {at.wrong_mode_steps} steps ({at.wrong_mode_share:.0%}) have a wrong commonest answer{collide}{alike}"
    )
    if at.correlation < INDEPENDENT:
        lines.append(f"  the answers look independent (correlation {at.correlation:.2f}): one p describes the steps")
    elif at.wrong_mode_steps:
        lines.append(
            "  voting cannot fix a step whose commonest answer is wrong: more votes only make it surer. Raise the "
            "later temperature (--later-temperature), give the spec prompt variants, use an ensemble, or split "
            "the step; `maker plan --from-calibration` accounts for these steps"
        )
    return lines


def _print_examples(examples: dict[str, Sample]) -> None:
    """One answer for each red flag reason: what the model said, and why it was thrown away."""
    for reason, sample in examples.items():
        why = f" ({sample.detail})" if sample.detail else ""
        print(f"  red flag {reason}{why}: {sample.quoted()}")


def _tokens(input_tokens: int, output_tokens: int, cached: int, written: int) -> str:
    """Tokens in and out, and what of the input the prompt cache served or took (when it did)."""
    cache = ", ".join(f"{what} {n}" for what, n in (("cached", cached), ("written to the cache", written)) if n)
    return f"tokens in/out {input_tokens}/{output_tokens}" + (f" ({cache})" if cache else "")


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "0%"


def _print_counts(report: RunCounts) -> None:
    print(
        f"samples {report.samples} (wasted {report.wasted_samples}, {_share(report.wasted_samples, report.samples)}), "
        f"red flags {report.red_flags} {report.red_flags_by_reason}, "
        f"late votes {report.late_votes}, max rounds {report.max_rounds}"
    )
    tokens = _tokens(
        report.input_tokens, report.output_tokens, report.cached_input_tokens, report.cache_write_input_tokens
    )
    print(
        f"{tokens}, cost {_dollars(report.cost_usd)}, "
        f"{report.wall_s:.1f} s, "
        f"{report.steps / max(report.wall_s, 1e-9):.1f} steps/s, run {report.run_id}"
    )
    _print_embeddings(report.embedding_tokens, report.embedding_cost_usd)
    if report.copy_share:
        print(f"copies: {report.copies} votes repeated a text byte for byte ({report.copy_share:.0%} of later votes)")
    _print_examples(report.red_flag_examples)
    if len(report.models) > 1:
        for label, counts in report.models.items():
            print(
                f"  {label}: samples {counts.samples}, red flags {counts.red_flags}, "
                f"share of winning votes {counts.winning_share}, cost {_dollars(counts.cost_usd)}"
            )


SimRate = Annotated[float | None, typer.Option(help="share of requests it happens to [0]")]
SimApiKey = Annotated[
    str | None, typer.Option(help="answer 401 to requests without this key (Bearer or x-api-key); None: no key [None]")
]
SimQuota = Annotated[
    str | None, typer.Option(metavar="BOOL", help="answer every request 429 insufficient_quota (true/false) [false]")
]


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
    sim_revised_rate: Annotated[
        float | None, typer.Option(help="share of answers given after a wrong draft; the last counts [0]")
    ] = None,
    sim_rate_429: SimRate = None,
    sim_retry_after_s: Annotated[float | None, typer.Option(help="the Retry-After of those 429s, seconds [1]")] = None,
    sim_rate_500: SimRate = None,
    sim_rate_timeout: SimRate = None,
    sim_timeout_hold_s: Annotated[float | None, typer.Option(help="hold a timed-out request this long [30]")] = None,
    sim_rate_refusal: SimRate = None,
    sim_api_key: SimApiKey = None,
    sim_quota_exhausted: SimQuota = None,
    sim_deceptive: Annotated[
        str | None,
        typer.Option(metavar="BOOL", help="triage: wrong answers give the right reason under a wrong queue [false]"),
    ] = None,
    sim_profile: SimProfile = None,
    sim_output_tokens: Annotated[
        float | None, typer.Option(help="mean answer length in tokens, padded with reasoning; 0: unpadded [0]")
    ] = None,
    sim_output_tokens_sigma: Annotated[float | None, typer.Option(help="the length's lognormal sigma [0.25]")] = None,
    sim_length_error_slope: Annotated[
        float | None, typer.Option(help="each 100 tokens past 700 add this share of the error rate [0]")
    ] = None,
    sim_hard_step_share: Annotated[float | None, typer.Option(help="share of steps that are hard [0]")] = None,
    sim_hard_step_max: Annotated[
        float | None, typer.Option(help="a hard step's error is the rate times U[1, this] [1]")
    ] = None,
    sim_latency_floor_ms: Annotated[float | None, typer.Option(help="no answer comes sooner, ms [0]")] = None,
    sim_latency_sigma: Annotated[
        float | None, typer.Option(help="0: exponential latency tail; above: lognormal, this sigma [0]")
    ] = None,
    sim_latency_scale: SimLatencyScale = None,
    seed: Seed = None,
) -> None:
    """Serve the simulated LLM: POST .../chat/completions, .../messages, .../api/chat, .../embeddings or
    .../api/embed; GET /health, /stats.

    Every option takes a value, `str(value)` of its SimConfig field included, so a config passes through
    as flags unchanged.
    """
    from maker_workers.simllm.server import SIM_READY, SimServer

    config = sim_config(
        error_rate=sim_error_rate,
        latency_ms=sim_latency_ms,
        seed=seed,
        malformed_rate=sim_malformed_rate,
        too_long_rate=sim_too_long_rate,
        collision_share=sim_collision_share,
        corrupt_share=sim_corrupt_share,
        revised_rate=sim_revised_rate,
        rate_429=sim_rate_429,
        retry_after_s=sim_retry_after_s,
        rate_500=sim_rate_500,
        rate_timeout=sim_rate_timeout,
        timeout_hold_s=sim_timeout_hold_s,
        rate_refusal=sim_rate_refusal,
        api_key=None if sim_api_key in ("", "None") else sim_api_key,
        quota_exhausted=sim_quota_exhausted,  # "true", "False", ...: pydantic reads it
        deceptive=sim_deceptive,
        profile=None if sim_profile in ("", "None") else sim_profile,
        output_tokens=sim_output_tokens,
        output_tokens_sigma=sim_output_tokens_sigma,
        length_error_slope=sim_length_error_slope,
        hard_step_share=sim_hard_step_share,
        hard_step_max=sim_hard_step_max,
        latency_floor_ms=sim_latency_floor_ms,
        latency_sigma=sim_latency_sigma,
        latency_scale=sim_latency_scale,
    )
    for signum in (signal.SIGTERM, signal.SIGHUP):  # nothing to shut down but itself: the default ends it
        signal.signal(signum, signal.SIG_DFL)
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
def calibrate(
    spec: Annotated[Path | None, typer.Argument(help="a spec task (YAML or JSON); its steps come from --trace")] = None,
    disks: Annotated[
        int | None, typer.Option(min=1, max=20, help="Hanoi disks; steps are drawn among the 2^N - 1")
    ] = None,
    trace: Annotated[
        Path | None, typer.Option(metavar="FILE", help="a reference run's --trace of SPEC: the steps and right answers")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, max=100_000, help="samples to draw in all, --per-step a step")] = 400,
    per_step: Annotated[
        int,
        typer.Option(
            min=1,
            max=100,
            help="samples on each drawn step (the first at the first temperature): 2 or more show how p spreads "
            "across steps, the steps whose commonest answer is wrong and how alike samples are",
        ),
    ] = 4,
    later_temperature: Annotated[
        float | None, typer.Option(min=0, max=2, help="the later samples' temperature [the spec's, else 0.1]")
    ] = None,
    draw_seed: Annotated[int | None, typer.Option(help="seed of the random choice of steps [random]")] = None,
    workers: Workers = 2,
    concurrency: Concurrency = None,
    sim_error_rate: SimErrorRate = None,
    sim_latency_ms: SimLatency = None,
    sim_malformed_rate: SimMalformed = None,
    sim_too_long_rate: SimTooLong = None,
    seed: Seed = None,
    redis_url: RedisUrl = None,
    broker_url: BrokerUrl = None,
    provider: ProviderName = None,
    model: ModelName = None,
    base_url: BaseUrl = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    price_in: PriceIn = None,
    price_out: PriceOut = None,
    price_cached: PriceCached = None,
    no_prompt_cache: NoPromptCache = False,
    json_out: JsonOut = False,
    out: Annotated[Path | None, typer.Option(help="write the calibration here as JSON, for maker plan")] = None,
) -> None:
    """Measure the model on random steps, --per-step samples each: p with its 95% interval, how p spreads across
    steps (hard steps, steps whose commonest answer is wrong, how alike samples are), the valid rate, red flags,
    answer lengths, errors by length and cost. Hanoi's steps with --disks N; a spec's with SPEC --trace FILE
    (a reference run's trace: its committed answers are the right ones). Exit 0 when some answer was valid."""
    import random

    from maker_workers.domains.hanoi import HanoiTask
    from maker_workers.errors import ConfigError
    from orchestrator import api
    from orchestrator.engine.runner import VotingConfig
    from orchestrator.planning.calibrate import calibrate as measure
    from orchestrator.planning.calibrate import draw_steps, draw_trace_steps, read_trace
    from orchestrator.reports.progress import SampleProgress

    if (disks is None) == (spec is None) or (spec is None) != (trace is None):
        fail("give either --disks N (Hanoi) or SPEC --trace FILE (a spec task and a reference run's trace)")
    rng = random.Random(draw_seed)
    wanted = -(-samples // per_step)  # steps to draw
    samples = wanted * per_step
    voting = VotingConfig()
    if disks is not None:
        task: Any = HanoiTask(disks)
        drawn, steps = draw_steps(disks, wanted, rng), task.total_steps()
    else:
        assert spec is not None and trace is not None
        task = guarded(lambda: api.spec_task(spec))
        lines = guarded(lambda: read_trace(trace))
        try:
            drawn, steps = draw_trace_steps(task, lines, wanted, rng), len({line["step"] for line in lines})
        except ConfigError as exc:
            fail(f"--trace {trace}: {exc}")
        voting = api.voting_for(task.spec)
    if later_temperature is not None:
        voting = voting.model_copy(update={"later_temperature": later_temperature})
    sim_flags = _sim_flags(sim_error_rate, sim_latency_ms, sim_malformed_rate, sim_too_long_rate, seed)
    models = model_options(
        provider, model, base_url, rpm, tpm, None, price_in, price_out, price_cached, no_prompt_cache
    )
    cluster = cluster_options(redis_url, broker_url, workers, concurrency, sim_flags, models)
    with contextlib.ExitStack() as stack:
        hooks = Display(stack, None, None, None).hooks(lambda _: {})
        progress = SampleProgress(err, samples)

        def on_cluster(running: Cluster) -> None:
            hooks.on_cluster(running)
            stack.enter_context(progress)

        result = guarded(
            lambda: measure(
                task,
                drawn,
                steps=steps,
                cluster=cluster,
                on_cluster=on_cluster,
                on_sample=progress.advance,
                per_step=per_step,
                voting=voting,
            )
        )
    if result.answered < samples:
        err.print(f"[yellow]warning:[/] {samples - result.answered} samples were never heard of", highlight=False)
    if out is not None:
        try:
            out.write_text(result.model_dump_json(indent=2) + "\n")
        except OSError as exc:
            fail(f"--out: cannot write {out}: {exc.strerror}", code=1)
    if json_out:
        print(result.model_dump_json())
    else:
        if result.p is None:
            print(f"no valid answer among {result.answered} (red flags {result.red_flags_by_reason})")
        else:
            print(
                f"p = {result.p:.4f} (95% interval {result.p_low:.4f}-{result.p_high:.4f}) over {result.votes} "
                f"valid answers; valid rate {result.valid_rate:.4f}"
            )
        print(f"red flags {result.red_flags} {result.red_flags_by_reason}, errors {result.errors}")
        for line in spread_lines(result):
            print(line)
        if result.output_tokens:
            tokens = result.output_tokens
            print(f"output tokens: mean {tokens.mean:.1f}, p50 {tokens.p50}, p90 {tokens.p90}, p99 {tokens.p99}")
        rates = ", ".join(
            f"{b.tokens}: {'-' if b.error_rate is None else f'{b.error_rate:.4f}'} ({b.votes})"
            for b in result.error_by_length
        )
        print(f"error rate by output tokens (votes): {rates}")
        per_sample = "" if result.cost_per_sample_usd is None else f", ${result.cost_per_sample_usd:.8f} a sample"
        if result.cached_share:
            per_sample += f", {result.cached_share:.1%} of the input read from the prompt cache (plan: --cached-share)"
        print(f"cost {_dollars(result.cost_usd)}{per_sample}, {result.wall_s:.1f} s, run {result.run_id}")
    raise typer.Exit(0 if result.p is not None else 1)


@app.command()
def plan(
    steps: Annotated[int, typer.Option(min=1, help="steps of the run")],
    target: Annotated[float, typer.Option(help="the chance the whole run must be right, in (0, 1)")],
    p: ValidP = None,
    valid_rate: Annotated[
        float | None, typer.Option(help="share of samples that pass the red flags [the calibration's, else 1]")
    ] = None,
    price_in: Annotated[float | None, typer.Option(min=0, help="$ per million input tokens")] = None,
    price_out: Annotated[float | None, typer.Option(min=0, help="$ per million output tokens")] = None,
    price_cached: Annotated[
        float | None, typer.Option(min=0, help="$ per million input tokens read from the prompt cache [--price-in]")
    ] = None,
    cached_share: Annotated[
        float | None,
        typer.Option(
            help="the share of input tokens read from the prompt cache, 0 to 1, priced at --price-cached "
            "[the calibration's, else 0]"
        ),
    ] = None,
    tokens_in: Annotated[float | None, typer.Option(min=0, help="input tokens a sample [the calibration's]")] = None,
    tokens_out: Annotated[float | None, typer.Option(min=0, help="output tokens a sample [the calibration's]")] = None,
    latency_s: Annotated[
        float | None, typer.Option(min=0, help="seconds one round of parallel calls takes (its slowest call)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="samples in flight at most (worker threads, or what the rate allows)")
    ] = None,
    from_calibration: FromCalibration = None,
    json_out: JsonOut = False,
) -> None:
    """k, reliability, expected samples, cost and wall time of a run, from the MAKER formulas. No model is called.

    With --from-calibration, also the plan at the low end of p's 95% interval: the k to pick if p is that bad.
    """
    from orchestrator.planning.plan import calibrated_p, load_calibration, sample_cost_usd, spread_of
    from orchestrator.planning.plan import plan as make_plan

    if (p is None) == (from_calibration is None):
        fail("give exactly one of --p P or --from-calibration FILE")
    if not 0.0 < target < 1.0:
        fail(f"--target must be in (0, 1), got {target}")
    if valid_rate is not None and not 0.0 < valid_rate <= 1.0:
        fail(f"--valid-rate must be in (0, 1], got {valid_rate}")
    if (price_in is None) != (price_out is None):
        fail("give --price-in and --price-out together")
    if cached_share is not None and not 0.0 <= cached_share <= 1.0:
        fail(f"--cached-share is the share of input tokens read from the prompt cache, in [0, 1]; got {cached_share}")
    if price_cached is not None and price_in is None:
        fail("--price-cached goes with --price-in and --price-out")
    if cached_share is not None and price_cached is None:
        fail("--cached-share needs --price-cached (the price of an input token read from the cache) and --price-in")
    p_low = cost = spread = None
    if from_calibration is not None:
        calibration = guarded(lambda: load_calibration(from_calibration))
        spread = spread_of(calibration)
        for line in spread_lines(calibration):
            err.print(line, highlight=False)
        p, p_low = guarded(lambda: calibrated_p(calibration, from_calibration))
        valid_rate = valid_rate or calibration.valid_rate
        tokens_in = tokens_in if tokens_in is not None else calibration.input_tokens_mean
        if tokens_out is None and calibration.output_tokens is not None:
            tokens_out = calibration.output_tokens.mean
        cost = calibration.cost_per_sample_usd
        if cached_share is None and price_cached is not None:
            cached_share = calibration.cached_share
        elif price_in is not None and price_cached is None and calibration.cached_share:
            err.print(
                f"note: {calibration.cached_share:.0%} of the calibration's input was read from the prompt cache; "
                "give --price-cached to price it so (else it is priced at --price-in)",
                highlight=False,
            )
        if p_low <= 0.5:
            err.print(
                f"[yellow]warning:[/] the low end of p's interval is {p_low:.4f}, not above 0.5: no pessimistic "
                "plan; calibrate with more samples",
                highlight=False,
            )
            p_low = None
    assert p is not None
    if not 0.5 < p <= 1.0:
        source = "--p" if from_calibration is None else f"the p of {from_calibration}"
        fail(f"{source} must be in (0.5, 1] (the chance one valid sample is right; voting needs above 0.5), got {p}")
    if price_in is not None and price_out is not None:
        if tokens_in is None or tokens_out is None:
            fail("a cost from prices needs --tokens-in and --tokens-out (or --from-calibration)")
        cost = sample_cost_usd(
            price_in, price_out, tokens_in, tokens_out, price_cached=price_cached, cached_share=cached_share or 0.0
        )
    planned = guarded(
        lambda: make_plan(
            p,
            steps,
            target,
            valid_rate=valid_rate or 1.0,
            cost_per_sample_usd=cost,
            latency_s=latency_s,
            concurrency=concurrency,
            p_low=p_low,
            spread=spread,
        )
    )
    if json_out:
        print(planned.model_dump_json())
        return
    if planned.spread is not None and planned.unfixable_share is not None and planned.ceiling is not None:
        print(
            f"p varies across steps (Beta({planned.spread[0]:.3g}, {planned.spread[1]:.3g}) from the calibration): "
            f"k is chosen over that spread, not one p; about {planned.unfixable_share:.2%} of steps have p below "
            f"0.5, which no k fixes (the best any k reaches is {planned.ceiling:.3g})"
        )
    for label, at in (("", planned), ("at the low end of p's interval: ", planned.pessimistic)):
        if at is None:
            continue
        print(
            f"{label}k_min {at.k_min}: p_full {at.p_full:.6f} over {at.steps:,} steps "
            f"(p {at.p:.6g}, valid rate {at.valid_rate:.4g})"
        )
        print(
            f"  expected samples {at.expected_samples_per_step:.3f} a step, {at.expected_samples:,.0f} in all; "
            f"{at.expected_rounds_per_step:.3f} rounds a step"
        )
        if at.projected_cost_usd is not None:
            cached = f", {cached_share:.0%} of the input read from the cache" if cached_share and price_in else ""
            print(f"  projected cost ${at.projected_cost_usd:,.2f} (${at.cost_per_sample_usd:.8f} a sample{cached})")
        if at.projected_wall_s is not None:
            print(f"  projected wall time {at.projected_wall_s:,.0f} s ({at.projected_wall_s / 3600:,.2f} h)")


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


@app.command()
def bench(
    disks: Annotated[int, typer.Option(min=1, max=20)] = 10,
    k: Annotated[int, typer.Option(min=1)] = 3,
    workers: Annotated[int, typer.Option(min=1)] = 2,
    concurrency: Annotated[int, typer.Option(min=1, help="threads per worker; 1: Celery's solo pool")] = 8,
    noop_tasks: Annotated[int, typer.Option(min=100, help="no-op tasks for the baseline")] = 5000,
    speculate: Annotated[
        int | None, typer.Option(min=0, help="steps to vote on ahead of the committed one [adaptive]")
    ] = None,
    redis_url: RedisUrl = None,
    http: Annotated[bool, typer.Option(help="also run the engine with the sim over HTTP, printed beside")] = True,
    json_out: JsonOut = False,
) -> None:
    """Engine overhead vs a bare no-op Celery task, same broker and workers, zero simulated latency.

    The headline figures have the simulated model inside each worker, so that they measure the engine; the
    same run with the sim over HTTP is printed beside them (--no-http skips it)."""
    from maker_workers.errors import MakerError
    from orchestrator.cluster.bench import run_bench

    console = Console(stderr=True) if json_out else None
    try:
        result = run_bench(disks, k, workers, concurrency, noop_tasks, redis_url, speculate, console, http=http)
    except MakerError as exc:
        fail(str(exc), code=1)
    if json_out:
        print(result.model_dump_json())


@app.command()
def mcp(
    transport: Annotated[str, typer.Option(help="stdio (the host starts the server) or streamable-http")] = "stdio",
    host: Annotated[str, typer.Option(help="streamable-http: address to bind; off loopback it needs --token")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="streamable-http: TCP port")] = 8000,
    token: Annotated[
        str | None, typer.Option(envvar="MAKER_MCP_TOKEN", help="streamable-http: bearer token every request needs")
    ] = None,
    workers: Workers = 2,
    concurrency: Concurrency = None,
    redis_url: RedisUrl = None,
    broker_url: BrokerUrl = None,
    provider: ProviderName = None,
    model: ModelName = None,
    base_url: BaseUrl = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    ensemble: Ensemble = None,
    price_in: PriceIn = None,
    price_out: PriceOut = None,
    price_cached: PriceCached = None,
    no_prompt_cache: NoPromptCache = False,
) -> None:
    """Serve MAKER to an MCP host (Claude Desktop, Claude Code, ...): submit and follow jobs, vote, validate, plan."""
    from orchestrator.interfaces.mcp_server import serve  # the MCP SDK loads only for this command

    models = model_options(
        provider, model, base_url, rpm, tpm, ensemble, price_in, price_out, price_cached, no_prompt_cache
    )
    cluster = cluster_options(redis_url, broker_url, workers, concurrency, {}, models)
    guarded(lambda: serve(cluster, transport=transport, host=host, port=port, token=token))


@app.command()
def flower(
    host: Annotated[str, typer.Option(help="address to bind; off loopback it needs --basic-auth")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one)")] = 5555,
    basic_auth: Annotated[
        str | None,
        typer.Option(envvar="MAKER_FLOWER_BASIC_AUTH", help="USER:PASSWORD the browser and API calls must send"),
    ] = None,
    inspect_every: Annotated[
        float, typer.Option(min=0.1, help="seconds between asking the workers who they are (pool, processed)")
    ] = 5.0,
    redis_url: RedisUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Flower on a cluster: every worker online with its pool and processed count, and each sample task."""
    from pydantic import ValidationError

    from orchestrator.cluster.flower import FlowerOptions, serve

    broker = broker_url or redis_url
    if broker is None:
        fail("maker flower watches a cluster: give --redis-url URL (or MAKER_REDIS_URL, or MAKER_BROKER_URL)")
    try:
        options = FlowerOptions(
            broker_url=broker, host=host, port=port, basic_auth=basic_auth, inspect_every_s=inspect_every
        )
    except ValidationError as exc:
        fail("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors()))
    guarded(lambda: serve(options))


_PENDING: list[int] = []  # signals asked to stop the run


def _stop_on(signum: int, _frame: object) -> None:
    """SIGINT, SIGTERM and SIGHUP stop a run: the `with` blocks shut the embedded cluster down. Python swallows an
    exception raised while a finalizer runs (redis-py's Connection.__del__: "Exception ignored in ..."), so the
    signal is also kept, and the run loop's next tick raises it again (`_tick`)."""
    _PENDING.append(signum)
    raise KeyboardInterrupt(signum)


def _tick() -> None:
    if _PENDING:
        raise KeyboardInterrupt(_PENDING[-1])


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on)
    app()


if __name__ == "__main__":
    sys.exit(main())
