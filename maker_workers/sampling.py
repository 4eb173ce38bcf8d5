"""One sample, start to finish: skip if decided, ask the provider, red-flag, record in Redis.

Kept apart from Celery so it can be driven directly in tests.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from maker_workers.domains.base import JSON, RedFlag, Task, canonical
from maker_workers.errors import ProviderError, RateLimited, Unavailable
from maker_workers.providers import Completion, Provider
from maker_workers.ratelimit import RateLimiter
from maker_workers.votes import Contest, Recorded, VoteBook


class SampleRequest(BaseModel):
    """The message the orchestrator sends for one LLM call. The task itself is stored with the run."""

    run_id: str
    step: int
    input_hash: str
    state: JSON
    previous: JSON = None  # the winning answer of the step before
    sample_id: str
    temperature: float | None
    k: int
    # False for the first k samples of a contest nobody has voted in: a decision needs k votes, so
    # the worker skips asking Redis first. Were it decided after all (a guess reopened while its old
    # samples still ran), the cost is one wasted call: the vote is recorded late, never counted.
    may_be_decided: bool = True

    @property
    def contest(self) -> Contest:
        return Contest(run_id=self.run_id, step=self.step, input_hash=self.input_hash, k=self.k)


class SamplePolicy(BaseModel):
    max_output_tokens: int = 750
    retries: int = 4
    retry_max_wait_s: float = 30.0


def _call(
    provider: Provider,
    messages: list[dict[str, str]],
    request: SampleRequest,
    policy: SamplePolicy,
    limiter: RateLimiter | None,
    on_event: Callable[[str, str], None],
    max_tokens: int,
) -> Completion:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        kind = "rate_limit_wait" if isinstance(exc, RateLimited) else "retry"
        on_event(kind, f"attempt {state.attempt_number}: {exc}")

    for attempt in Retrying(
        retry=retry_if_exception_type((RateLimited, Unavailable)),
        stop=stop_after_attempt(policy.retries + 1),
        wait=wait_random_exponential(multiplier=0.2, max=policy.retry_max_wait_s),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            if limiter is not None:
                limiter.acquire(lambda wait: on_event("rate_limit_wait", f"{wait:.3f} s for the shared rate"))
            return provider.complete(
                messages,
                temperature=request.temperature,
                # One token past the limit lets us tell "exactly at the limit" from "over it".
                max_tokens=max_tokens + 1,
            )
    raise AssertionError("unreachable: tenacity reraises")


def record_failure(book: VoteBook, request: SampleRequest, exc: Exception) -> Recorded:
    """A sample that could not be drawn is recorded as an error: the orchestrator hears of every sample."""
    return book.record(request.contest, request.sample_id, "error", f"{type(exc).__name__}: {exc}"[:300])


def draw_sample(
    request: SampleRequest,
    task: Task,
    provider: Provider,
    book: VoteBook,
    policy: SamplePolicy,
    limiter: RateLimiter | None = None,
) -> Recorded | None:
    """Returns what the vote script recorded, or None when the step was already decided."""
    contest = request.contest
    if request.may_be_decided and book.is_decided(contest):
        book.skip(contest, request.sample_id)
        return None

    def on_event(kind: str, detail: str) -> None:
        book.event(contest, request.sample_id, kind, detail=detail)

    max_tokens = task.max_output_tokens or policy.max_output_tokens
    messages = task.messages(request.state, request.step, request.previous)
    try:
        completion = _call(provider, messages, request, policy, limiter, on_event, max_tokens)
    except ProviderError as exc:
        return record_failure(book, request, exc)
    if completion.temperature_omitted:
        book.note_temperature_omitted(contest, request.sample_id)
    tokens = {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens}
    if completion.truncated or completion.output_tokens > max_tokens:
        return book.record(contest, request.sample_id, "red_flag", "too_long", **tokens)
    try:
        key, answer = task.parse(completion.text, request.state)
    except RedFlag as flag:
        return book.record(contest, request.sample_id, "red_flag", flag.reason, **tokens)
    payload = canonical(answer)
    return book.record(contest, request.sample_id, "vote", key, payload="" if payload == key else payload, **tokens)
