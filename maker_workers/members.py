"""The models a worker draws samples from: one, or an ensemble that takes turns, each with its own
provider, shared rate limit and price.

Mixing models is the paper's remedy for correlated errors: samples of one step rotate among the
members (`SampleRequest.member`), so their votes pool in one contest.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import redis

from maker_workers.errors import ConfigError
from maker_workers.pricing import Price, for_provider, price_of
from maker_workers.providers import NAMES, Provider, make_provider
from maker_workers.ratelimit import RateLimiter
from maker_workers.settings import WorkerSettings


@dataclass(frozen=True)
class Member:
    label: str  # "provider:model", as reports and events name it
    provider: Provider
    limiter: RateLimiter | None
    price: Price | None  # None: unknown, so its samples' cost is unknown

    def cost_nusd(
        self, input_tokens: int, output_tokens: int, cached_tokens: int = 0, written_tokens: int = 0
    ) -> int | None:
        if self.price is None:
            return None
        return self.price.cost_nusd(input_tokens, output_tokens, cached_tokens, written_tokens)


def parse_ensemble(text: str) -> list[tuple[str, str]]:
    """`openai:gpt-4.1-mini,anthropic:claude-haiku-4-5` -> [(provider, model), ...]."""
    members = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        provider, _, model = item.partition(":")
        if not model:
            raise ConfigError(f"ensemble member {item!r} is not provider:model, e.g. openai:gpt-4.1-mini")
        if provider not in NAMES:
            raise ConfigError(f"ensemble member {item!r}: unknown provider {provider!r}, use one of {', '.join(NAMES)}")
        members.append((provider, model))
    if not members:
        raise ConfigError("the ensemble names no model: give provider:model,provider:model")
    return members


def chosen(settings: WorkerSettings) -> list[tuple[str, str]]:
    """The (provider, model) pairs the settings name: the ensemble, or the provider with its model(s)."""
    if settings.ensemble:
        pairs = parse_ensemble(settings.ensemble)
    else:
        pairs = [(settings.provider, model.strip()) for model in settings.model.split(",") if model.strip()]
        if not pairs:
            raise ConfigError("no model given: set --model NAME (MAKER_MODEL)")
    if len(pairs) > 1 and (settings.price_in is not None or settings.price_out is not None):
        raise ConfigError("--price-in/--price-out price one model; an ensemble's models are priced from the table")
    if settings.price_cached is not None and settings.price_in is None:
        raise ConfigError("--price-cached (MAKER_PRICE_CACHED) goes with --price-in and --price-out")
    if (settings.price_in is None) != (settings.price_out is None):
        raise ConfigError("give both --price-in and --price-out (MAKER_PRICE_IN and MAKER_PRICE_OUT), or neither")
    return pairs


def price_for(settings: WorkerSettings, provider: str, model: str) -> Price | None:
    if settings.price_in is not None and settings.price_out is not None:
        given = Price(input=settings.price_in, output=settings.price_out, cached=settings.price_cached)
        return for_provider(provider, given)
    return price_of(provider, model)


def members_from(settings: WorkerSettings, client: redis.Redis, http: httpx.Client) -> list[Member]:
    """Every model the settings name, ready to call: a ConfigError names what is missing (a key, a model)."""
    members = []
    limits = settings.provider_limits
    for provider, model in chosen(settings):
        base_url = settings.base_url or (settings.sim_base_url if provider == "sim" else None)
        one = settings.model_copy(update={"provider": provider, "model": model, "base_url": base_url})
        limiter = None if limits is None else RateLimiter(client, provider, model, limits)
        members.append(
            Member(f"{provider}:{model}", make_provider(one, http), limiter, price_for(settings, provider, model))
        )
    return members
