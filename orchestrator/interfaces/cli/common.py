"""What the commands share: the app, the option types, the cluster and model options, the display."""

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

from maker_workers.simllm.profiles import PROFILES

if TYPE_CHECKING:  # the rest loads in the command that needs it, so `maker --help` and `--version` stay quick
    from maker_workers.simllm.model import SimConfig
    from orchestrator.cluster.connect import Cluster, ClusterOptions
    from orchestrator.cluster.model_options import ModelOptions
    from orchestrator.engine.runner import CommittedStep
    from orchestrator.interfaces.api import Hooks
    from orchestrator.reports.progress import ProgressLog, StepProgress


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


def _dollars(cost: float | None) -> str:
    return (
        "unknown (a model's price is not in the table: give --price-in/--price-out)" if cost is None else f"${cost:.4f}"
    )


SimRate = Annotated[float | None, typer.Option(help="share of requests it happens to [0]")]


SimApiKey = Annotated[
    str | None, typer.Option(help="answer 401 to requests without this key (Bearer or x-api-key); None: no key [None]")
]


SimQuota = Annotated[
    str | None, typer.Option(metavar="BOOL", help="answer every request 429 insufficient_quota (true/false) [false]")
]


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
