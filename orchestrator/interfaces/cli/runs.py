"""`maker hanoi`, `maker run` and `maker vote`: the commands that carry a task out on a cluster."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from maker_workers.domains.base import DEFAULT_THRESHOLD

if TYPE_CHECKING:  # the rest loads in the command that needs it, so `maker --help` and `--version` stay quick
    from maker_workers.domains.spec import AnswerSpec
    from orchestrator.engine.runner import CommittedStep, VotingConfig
    from orchestrator.interfaces.api import Hooks
    from orchestrator.reports.phrasings import Candidate
    from orchestrator.reports.report import RunCounts
    from orchestrator.reports.samples import Sample

from orchestrator.interfaces.cli.common import (
    AdaptiveK,
    BaseUrl,
    BrokerUrl,
    Concurrency,
    Display,
    Ensemble,
    FromCalibration,
    JsonOut,
    LaterTemperature,
    LogEvery,
    LogFormat,
    MaxCost,
    MaxErrors,
    MaxRedFlags,
    MaxSamples,
    MaxWaste,
    MetricsPort,
    ModelName,
    NoPromptCache,
    PriceCached,
    PriceIn,
    PriceOut,
    ProviderName,
    RedisUrl,
    Resume,
    Rpm,
    Seed,
    SimErrorRate,
    SimInprocess,
    SimLatency,
    SimLatencyScale,
    SimMalformed,
    SimProfile,
    SimTooLong,
    Speculate,
    T,
    TargetReliability,
    Tpm,
    Trace,
    TraceSamples,
    ValidP,
    Workers,
    _dollars,
    _sim_flags,
    app,
    cluster_options,
    err,
    fail,
    guarded,
    model_options,
)


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


def _print_embeddings(tokens: int, cost: float | None) -> None:
    if tokens:
        print(f"embeddings (semantic matching): {tokens} tokens, {_dollars(cost)} of the cost")


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
