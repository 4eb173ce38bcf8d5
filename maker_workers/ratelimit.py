"""One rate for a provider shared by every worker on every machine, kept in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources

import redis

from maker_workers.errors import ConfigError, store_errors

_SOURCE = resources.files("maker_workers").joinpath("lua/rate_limit.lua").read_text()


class RateLimiter:
    """Reserves a slot per request; `acquire` sleeps until the slot comes and says how long it waited."""

    def __init__(self, client: redis.Redis, key: str, per_minute: float, burst: int = 1) -> None:
        if per_minute <= 0 or burst < 1:
            raise ConfigError(f"a rate limit needs a rate above 0 and a burst of at least 1, got {per_minute}, {burst}")
        self._script = client.register_script(_SOURCE)
        self._key = key
        self._interval_us = round(60_000_000 / per_minute)
        self._burst = burst

    def reserve(self) -> float:
        """Seconds to wait before sending the request whose slot this reserves."""
        with store_errors(f"rate limiter {self._key}"):
            return int(self._script(keys=[self._key], args=[self._interval_us, self._burst])) / 1e6

    def acquire(self, on_wait: Callable[[float], None] = lambda _: None) -> float:
        wait = self.reserve()
        if wait > 0:
            on_wait(wait)
            time.sleep(wait)
        return wait
