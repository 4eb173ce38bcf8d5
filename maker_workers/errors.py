"""The exceptions of maker, one tree under MakerError.

MakerError
├── ConfigError        bad settings, flags or inputs; the message says how to fix them
├── ProviderError      an LLM provider refused the request or answered in a way we cannot use
│   ├── RateLimited    the provider said slow down (HTTP 429); retried
│   └── Unavailable    connection failure, timeout or 5xx; retried
├── StoreError         Redis refused or was unreachable
├── ClusterFailed      a process of the embedded cluster died
└── StepFailed         a step hit a cap (samples, red flags, errors); it is failed, never guessed
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis


class MakerError(Exception):
    """Base of every error maker raises on purpose."""


class ConfigError(MakerError):
    pass


class ProviderError(MakerError):
    pass


class RateLimited(ProviderError):
    pass


class Unavailable(ProviderError):
    pass


class StoreError(MakerError):
    pass


class ClusterFailed(MakerError):
    pass


class StepFailed(MakerError):
    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"step {step} failed: {reason}")
        self.step = step
        self.reason = reason


@contextmanager
def store_errors(doing: str) -> Iterator[None]:
    """Where Redis enters our code: its failures become a StoreError saying what we were doing."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreError(f"{doing} failed: {exc}") from exc
