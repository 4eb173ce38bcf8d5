"""Which model(s) the embedded workers call, from `--provider/--model/--base-url/--rpm/--tpm/--ensemble`,
`--price-in/--price-out` and `--no-prompt-cache`: checked before anything starts, handed to the workers as MAKER_
variables."""

from __future__ import annotations

import httpx
import redis
from pydantic import BaseModel, Field

from maker_workers.errors import ConfigError
from maker_workers.members import Member, members_from
from maker_workers.providers import NAMES
from maker_workers.settings import load_settings

# Each option and the worker setting it becomes.
_VARIABLES = {
    "provider": "MAKER_PROVIDER",
    "model": "MAKER_MODEL",
    "base_url": "MAKER_BASE_URL",
    "rpm": "MAKER_RATE_LIMIT_PER_MINUTE",
    "tpm": "MAKER_TOKENS_PER_MINUTE",
    "ensemble": "MAKER_ENSEMBLE",
    "price_in": "MAKER_PRICE_IN",
    "price_out": "MAKER_PRICE_OUT",
    "price_cached": "MAKER_PRICE_CACHED",
    "prompt_cache": "MAKER_PROMPT_CACHE",
}
DEFAULT_SIM_MODEL = "sim-hanoi"
_REQUIRED = ("provider", "model", "prompt_cache")  # settings that have a default but no None


class ModelOptions(BaseModel):
    provider: str | None = None
    model: str | None = None  # several, comma-separated, make an ensemble of one provider's models
    base_url: str | None = None
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    ensemble: str | None = None  # provider:model,provider:model
    price_in: float | None = Field(None, ge=0)
    price_out: float | None = Field(None, ge=0)
    price_cached: float | None = Field(None, ge=0)
    prompt_cache: bool | None = None  # False: --no-prompt-cache; None: the workers' default (on)

    def given(self) -> list[str]:
        """The options the user set, as flags."""
        return [
            f"--{'no-' if value is False else ''}{name.replace('_', '-')}" for name, value in self if value is not None
        ]

    @property
    def needs_sim(self) -> bool:
        """Whether the embedded simulated LLM must run: some member is `sim` and no URL was given for it."""
        if self.base_url is not None:
            return False
        if self.ensemble:
            return any(item.strip().startswith("sim:") for item in self.ensemble.split(","))
        return self.provider in (None, "sim")

    def worker_env(self, sim_url: str | None) -> dict[str, str | None]:
        """The workers' MAKER_ variables; None removes one the user's shell may have set."""
        values = self.model_dump()
        if self.provider in (None, "sim") and not self.ensemble:
            values["provider"], values["model"] = "sim", self.model or DEFAULT_SIM_MODEL
        env: dict[str, str | None] = {
            var: None if values[name] is None else str(values[name]) for name, var in _VARIABLES.items()
        }
        env["MAKER_SIM_URL"] = sim_url
        return env

    def check(self) -> list[Member]:
        """What the workers will build, built here first: an unknown provider, a missing model or API key
        is a ConfigError before any process starts. Keys come from the environment, as the workers'."""
        if self.provider is not None and self.provider not in NAMES:
            raise ConfigError(f"--provider {self.provider!r} is not one of {', '.join(NAMES)}")
        if self.model and self.provider is None:
            raise ConfigError(
                f"--model {self.model} needs its --provider (openai, anthropic, ollama; sim is the default)"
            )
        if self.provider not in (None, "sim") and not self.model and not self.ensemble:
            raise ConfigError(f"--provider {self.provider} needs --model NAME (the model to call)")
        if self.ensemble and (self.provider or self.model):
            raise ConfigError("--ensemble names provider:model pairs; give it without --provider/--model")
        given = {var.removeprefix("MAKER_").lower(): v for var, v in self.worker_env("http://127.0.0.1:0/v1").items()}
        # As the workers will read it: these values over the rest of the environment (API keys included).
        settings = load_settings(**{name: v for name, v in given.items() if v is not None or name not in _REQUIRED})
        with httpx.Client() as http:
            return members_from(settings, redis.Redis(), http)
