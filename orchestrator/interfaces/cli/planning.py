"""`maker calibrate` and `maker plan`: what a model does on a task, and the k and cost a run needs."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # the rest loads in the command that needs it, so `maker --help` and `--version` stay quick
    from orchestrator.cluster.connect import Cluster
    from orchestrator.planning.calibrate import Calibration

from orchestrator.interfaces.cli.common import (
    BaseUrl,
    BrokerUrl,
    Concurrency,
    Display,
    FromCalibration,
    JsonOut,
    ModelName,
    NoPromptCache,
    PriceCached,
    PriceIn,
    PriceOut,
    ProviderName,
    RedisUrl,
    Rpm,
    Seed,
    SimErrorRate,
    SimLatency,
    SimMalformed,
    SimTooLong,
    Tpm,
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
