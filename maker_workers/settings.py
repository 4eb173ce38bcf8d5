"""Worker settings, read from the environment (prefix MAKER_) at the edge and nowhere else."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from maker_workers.errors import ConfigError
from maker_workers.ratelimit import ProviderLimits
from maker_workers.simllm import inprocess
from maker_workers.simllm.model import SimConfig


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAKER_", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding tallies and events")
    broker_url: str | None = Field(None, description="Celery broker; defaults to redis_url")
    provider: str = Field("sim", description="LLM provider name: sim, openai, anthropic, ollama")
    model: str = Field("sim-hanoi", description="model name sent to the provider")
    base_url: str | None = Field(None, description="the provider's base URL; each provider has a default")
    sim_url: str | None = Field(None, description="the simulated LLM's base URL, for `sim` models without base_url")
    sim_inprocess: SimConfig | None = Field(
        None, description="serve the simulated LLM inside this worker (JSON of its config), not over HTTP: benchmarks"
    )
    api_key: str | None = Field(None, repr=False, description="provider API key (never logged)")
    # The providers' own variables, unprefixed as their SDKs read them; MAKER_API_KEY serves where they are unset.
    openai_api_key: str | None = Field(
        None, validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY"), repr=False, description="never logged"
    )
    anthropic_api_key: str | None = Field(
        None,
        validation_alias=AliasChoices("anthropic_api_key", "ANTHROPIC_API_KEY"),
        repr=False,
        description="never logged",
    )
    ensemble: str | None = Field(
        None, description="several models that take turns: provider:model,provider:model (overrides provider/model)"
    )
    price_in: float | None = Field(None, ge=0, description="$ per million input tokens (overrides the price table)")
    price_out: float | None = Field(None, ge=0, description="$ per million output tokens (with price_in)")
    price_cached: float | None = Field(
        None, ge=0, description="$ per million input tokens read from the prompt cache (with price_in) [price_in]"
    )
    prompt_cache: bool = Field(
        True,
        description="anthropic: mark a system prompt long enough to be cached (1,024 tokens; Haiku 2,048) for the "
        "provider's prompt cache, whose reads cost a tenth of the input price; false: never",
    )
    max_output_tokens: int = Field(750, ge=1, description="red flag: answers longer than this are discarded")
    sample_text_chars: int = Field(
        2000, ge=0, description="the first this many characters of a red-flagged answer are kept on its event (0: none)"
    )
    vote_text_chars: int = Field(
        500, ge=0, description="the first this many characters of a vote's answer are kept on its event (0: none)"
    )
    redis_wait_s: float = Field(
        15.0,
        ge=0,
        description="how long the first contact waits for a Redis that refuses connections or is still loading its "
        "data (one starting or restarting beside the worker); 0: not at all",
    )
    request_timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(4, ge=0, description="retries of a failed provider call before it counts as an error")
    http_connections: int = Field(64, ge=1)
    events_maxlen: int = Field(100_000, ge=1)
    contest_ttl_s: int = Field(3_600, ge=60, description="a contest's keys expire this long after its first sample")
    rate_limit_per_minute: float | None = Field(
        None, gt=0, description="requests a minute to this provider and model, shared by every worker"
    )
    rate_limit_burst: int = Field(10, ge=1, description="requests that may go at once after a quiet spell")
    tokens_per_minute: float | None = Field(
        None, gt=0, description="tokens a minute (prompt and answer) to this provider and model, shared likewise"
    )
    rate_limit_max_ahead_s: float = Field(
        10.0, gt=0, description="no request is booked further ahead than this; later ones wait unbooked"
    )
    task_events: bool = Field(False, description="send Celery task events (turn on for Flower)")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="this worker process's Prometheus metrics port (0: none); one per process"
    )

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def sim_base_url(self) -> str | None:
        """Where `sim` models are reached when they have no base_url of their own."""
        return inprocess.URL if self.sim_inprocess is not None else self.sim_url

    @property
    def provider_limits(self) -> ProviderLimits | None:
        """The shared limits, or None when neither requests nor tokens a minute is set."""
        if self.rate_limit_per_minute is None and self.tokens_per_minute is None:
            return None
        return ProviderLimits(
            requests_per_minute=self.rate_limit_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            burst=self.rate_limit_burst,
            max_ahead_s=self.rate_limit_max_ahead_s,
        )


@lru_cache(maxsize=1)
def settings() -> WorkerSettings:
    """The settings from the environment; a bad value is a ConfigError naming its variable."""
    return load_settings()


def load_settings(**given: Any) -> WorkerSettings:
    """The environment's settings with `given` values laid over them; a bad value is a ConfigError."""
    try:
        return WorkerSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"MAKER_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad worker setting: {problems}") from None
