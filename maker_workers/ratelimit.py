"""A provider's limits, shared by every worker on every machine and kept in Redis.

Requests a minute and tokens a minute, per provider and model, are two GCRA buckets that
lua/rate_limit.lua charges together, on Redis's clock. A request is booked only when its slot is near
(`max_ahead_s`): a worker that would wait longer books nothing and comes back later. So a long queue
never books slots past a sample's timeout, and a sample whose step is decided meanwhile holds nothing.

Tokens are booked as estimated before the call (the prompt at four characters a token, plus the most
the answer may take) and settled to what the provider reports after it, so the token rate tracks
what was really served.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import redis

from maker_workers import keys
from maker_workers.errors import ConfigError, store_errors

_SOURCE = resources.files("maker_workers").joinpath("lua/rate_limit.lua").read_text()

# Tokens that may go at once after a quiet spell, as a share of a minute's: room for a few requests
# at any sensible limit, yet a small part of the minute a provider counts over.
TOKEN_BURST_SHARE = 0.1


@dataclass(frozen=True)
class ProviderLimits:
    """What one provider and model allow, as the account states it; None means not limited."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    burst: int = 10  # requests that may go at once after a quiet spell
    token_burst: float | None = None  # tokens likewise; None: TOKEN_BURST_SHARE of a minute's
    max_ahead_s: float = 10.0  # no request is booked further ahead than this

    def __post_init__(self) -> None:
        rates = [r for r in (self.requests_per_minute, self.tokens_per_minute) if r is not None]
        if not rates or min(rates) <= 0 or self.burst < 1 or self.max_ahead_s <= 0:
            raise ConfigError(
                "a rate limit needs requests or tokens a minute above 0, a burst of at least 1 and a positive "
                f"max_ahead_s, got {self}"
            )
        if self.token_burst is not None and self.token_burst <= 0:
            raise ConfigError(f"a rate limit's token burst must be above 0, got {self.token_burst}")


@dataclass(frozen=True)
class Reservation:
    """`booked`: the request may go after `wait_s`. Otherwise nothing was booked: ask again after `wait_s`."""

    booked: bool
    wait_s: float


def estimated_tokens(messages: list[dict[str, str]], max_output_tokens: int) -> int:
    """What a request may cost before the provider says: the prompt at about four characters a token,
    plus the longest answer allowed."""
    return sum(math.ceil(len(m.get("content", "")) / 4) for m in messages) + max_output_tokens


class RateLimiter:
    """Books requests against one provider and model's shared limits; one per worker process."""

    def __init__(self, client: redis.Redis, provider: str, model: str, limits: ProviderLimits) -> None:
        self._script = client.register_script(_SOURCE)
        self._keys = [keys.rate_limit(provider, model), keys.rate_limit_tokens(provider, model)]
        self.limits = limits
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self._us_per_request = 0 if rpm is None else round(60e6 / rpm)
        self._request_burst_us = limits.burst * self._us_per_request
        self._us_per_token = 0.0 if tpm is None else 60e6 / tpm
        token_burst = limits.token_burst or (tpm or 0) * TOKEN_BURST_SHARE
        self._token_burst_us = round(token_burst * self._us_per_token)

    def _charge(self, requests: int, tokens: int, max_ahead_us: int) -> Reservation:
        args = [requests, tokens, max_ahead_us, self._us_per_request, self._request_burst_us]
        args += [repr(self._us_per_token), self._token_burst_us]
        with store_errors(f"rate limiter {self._keys[0]}"):
            booked, wait_us = self._script(keys=self._keys, args=args)
        return Reservation(booked=booked == 1, wait_s=int(wait_us) / 1e6)

    def reserve(self, tokens: int = 0) -> Reservation:
        """Book one request of `tokens` (estimated) if its slot is at most `max_ahead_s` away."""
        return self._charge(1, tokens, round(self.limits.max_ahead_s * 1e6))

    def settle(self, estimated: int, actual: int) -> None:
        """Correct a sent request's tokens to what the provider served: unused ones go back to everyone."""
        if actual != estimated:
            self._charge(0, actual - estimated, -1)

    def release(self, tokens: int) -> None:
        """Give back a booked request that will not be sent, and its tokens."""
        self._charge(-1, -tokens, -1)

    def acquire(self, tokens: int, on_wait: Callable[[float, bool], None], wanted: Callable[[], bool]) -> bool:
        """Wait until a request of `tokens` may go. After every wait asks `wanted`; False ends the wait
        with nothing left booked. `on_wait(seconds, booked)` hears of each wait before it starts."""
        bound = self.limits.max_ahead_s
        while True:
            reservation = self.reserve(tokens)
            if reservation.booked:
                if reservation.wait_s == 0:
                    return True
                try:
                    on_wait(reservation.wait_s, True)
                    time.sleep(reservation.wait_s)
                    if wanted():
                        return True
                except BaseException:
                    self.release(tokens)  # nothing stays booked for a request that will not go
                    raise
                self.release(tokens)
                return False
            # Jitter spreads the refused over half the bound, so they do not all come back at one instant;
            # half the bound is still booked by others when they do, so the provider never idles.
            pause = min(reservation.wait_s + random.uniform(0, bound / 2), bound)
            on_wait(pause, False)
            time.sleep(pause)
            if not wanted():
                return False
