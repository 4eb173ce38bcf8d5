"""The exceptions of maker, one tree under MakerError.

MakerError
├── ConfigError        bad settings, flags or inputs; the message says how to fix them
├── ProviderError      an LLM provider refused the request or answered in a way we cannot use
│   ├── Retryable      worth another try
│   │   ├── RateLimited    the provider said slow down (HTTP 429); retried, after its Retry-After if given
│   │   └── Unavailable    connection failure, timeout or 5xx; retried
│   └── Rejected       an answer no retry can change (401, 403, 404, a bad request, an exhausted
│                      account): the run ends at once with this message
├── StoreError         Redis refused or was unreachable
│   └── LeaseLost      another orchestrator took the run over: this one stops, touching nothing
├── ClusterFailed      a process of the embedded cluster died
├── BudgetSpent        the run's spend reached --max-cost-usd; it can be resumed with a larger budget
├── Cancelled          someone asked the run to stop (RunStore.cancel); it can be resumed
└── StepFailed         a step hit a cap (samples, red flags, errors); it is failed, never guessed
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class MakerError(Exception):
    """Base of every error maker raises on purpose."""


class ConfigError(MakerError):
    pass


class ProviderError(MakerError):
    pass


class Retryable(ProviderError):
    """A failure worth another try; `retry_after` is the provider's own Retry-After, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(Retryable):
    pass


class Unavailable(Retryable):
    pass


class Rejected(ProviderError):
    """The provider refused in a way retrying cannot fix; the message names the provider, the status
    and what to do."""


class StoreError(MakerError):
    pass


class LeaseLost(StoreError):
    """Another orchestrator took the run over (this one was frozen, cut off or paused past its lease): every write
    of this one is refused in Redis from then on, so it exits, touching nothing."""


class ClusterFailed(MakerError):
    pass


class BudgetSpent(MakerError):
    def __init__(self, spent_usd: float, budget_usd: float) -> None:
        super().__init__(
            f"spent ${spent_usd:.4f} of the ${budget_usd:.4f} budget (--max-cost-usd); no new samples were sent. "
            "Resume the run (--resume RUN_ID) with a larger --max-cost-usd to go on"
        )


class Cancelled(MakerError):
    pass


class StepFailed(MakerError):
    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"step {step} failed: {reason}")
        self.step = step
        self.reason = reason


REDIS_FULL = (
    "Redis is full (it reached maxmemory and evicts nothing), so no vote can be recorded; "
    "raise maxmemory or free memory, then resume the run (--resume RUN_ID)"
)


@contextmanager
def store_errors(doing: str) -> Iterator[None]:
    """Where Redis enters our code: its failures become a StoreError saying what we were doing."""
    import redis  # here, not above: the CLI's help and version load these classes, and redis-py takes 0.1 s

    try:
        yield
    except redis.OutOfMemoryError as exc:
        raise StoreError(f"{doing} failed: {REDIS_FULL}") from exc
    except redis.RedisError as exc:
        raise StoreError(f"{doing} failed: {exc}") from exc
