"""Worker settings, read from the environment (prefix MAKER_) at the edge and nowhere else."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from maker_workers.errors import ConfigError


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAKER_", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding tallies and events")
    broker_url: str | None = Field(None, description="Celery broker; defaults to redis_url")
    provider: str = Field("sim", description="LLM provider name: sim, openai, anthropic")
    model: str = Field("sim-hanoi", description="model name sent to the provider")
    base_url: str | None = Field(None, description="the provider's base URL; each provider has a default")
    api_key: str | None = Field(None, repr=False, description="provider API key (never logged)")
    max_output_tokens: int = Field(750, ge=1, description="red flag: answers longer than this are discarded")
    request_timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(4, ge=0, description="retries of a failed provider call before it counts as an error")
    http_connections: int = Field(64, ge=1)
    events_maxlen: int = Field(100_000, ge=1)
    contest_ttl_s: int = Field(3_600, ge=60, description="a contest's keys expire this long after its first sample")
    rate_limit_per_minute: float | None = Field(
        None, gt=0, description="requests a minute to this provider and model, shared by every worker"
    )
    rate_limit_burst: int = Field(10, ge=1, description="requests that may go at once after a quiet spell")
    task_events: bool = Field(False, description="send Celery task events (turn on for Flower)")

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url


@lru_cache(maxsize=1)
def settings() -> WorkerSettings:
    """The settings from the environment; a bad value is a ConfigError naming its variable."""
    try:
        return WorkerSettings()
    except ValidationError as exc:
        problems = "; ".join(f"MAKER_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad worker setting: {problems}") from None
