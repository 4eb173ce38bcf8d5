"""`maker sim-llm serve`, `maker bench`, `maker mcp` and `maker flower`: the servers maker runs."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:  # the rest loads in the command that needs it, so `maker --help` and `--version` stay quick
    pass

from orchestrator.interfaces.cli.common import (
    BaseUrl,
    BrokerUrl,
    Concurrency,
    Ensemble,
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
    SimApiKey,
    SimErrorRate,
    SimLatency,
    SimLatencyScale,
    SimMalformed,
    SimProfile,
    SimQuota,
    SimRate,
    SimTooLong,
    Tpm,
    Workers,
    app,
    cluster_options,
    fail,
    guarded,
    model_options,
    sim_app,
    sim_config,
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
