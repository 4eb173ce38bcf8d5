"""One sample, start to finish: skip if decided, ask the provider, red-flag, record in Redis.

Kept apart from Celery so it can be driven directly in tests.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from maker_workers.domains import hanoi
from maker_workers.errors import ProviderError, RateLimited, Unavailable
from maker_workers.providers import Completion, Provider
from maker_workers.ratelimit import RateLimiter
from maker_workers.votes import Contest, Recorded, VoteBook


class SampleRequest(BaseModel):
    """The message the orchestrator sends for one LLM call."""

    run_id: str
    step: int
    state: hanoi.State
    previous_move: hanoi.Move | None
    sample_id: str
    temperature: float | None
    k: int
    # False for the first k samples of a contest nobody has voted in: a decision needs k votes, so
    # the worker skips asking Redis first. Were it decided after all (a guess reopened while its old
    # samples still ran), the cost is one wasted call: the vote is recorded late, never counted.
    may_be_decided: bool = True

    @property
    def contest(self) -> Contest:
        digest = hanoi.input_hash(self.state, self.previous_move)
        return Contest(run_id=self.run_id, step=self.step, input_hash=digest, k=self.k)


class SamplePolicy(BaseModel):
    max_output_tokens: int = 750
    retries: int = 4
    retry_max_wait_s: float = 30.0


def _call(
    provider: Provider,
    request: SampleRequest,
    policy: SamplePolicy,
    limiter: RateLimiter | None,
    on_event: Callable[[str, str], None],
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
                hanoi.messages(request.state, request.previous_move),
                temperature=request.temperature,
                # One token past the limit lets us tell "exactly at the limit" from "over it".
                max_tokens=policy.max_output_tokens + 1,
            )
    raise AssertionError("unreachable: tenacity reraises")


def record_failure(book: VoteBook, request: SampleRequest, exc: Exception) -> Recorded:
    """A sample that could not be drawn is recorded as an error: the orchestrator hears of every sample."""
    return book.record(request.contest, request.sample_id, "error", f"{type(exc).__name__}: {exc}"[:300])


def draw_sample(
    request: SampleRequest,
    provider: Provider,
    book: VoteBook,
    policy: SamplePolicy,
    limiter: RateLimiter | None = None,
) -> Recorded | None:
    """Returns what the vote script recorded, or None when the step was already decided."""
    contest = request.contest
    if request.may_be_decided and book.is_decided(contest):
        book.event(contest, request.sample_id, "skipped")
        return None

    def on_event(kind: str, detail: str) -> None:
        book.event(contest, request.sample_id, kind, detail=detail)

    try:
        completion = _call(provider, request, policy, limiter, on_event)
    except ProviderError as exc:
        return record_failure(book, request, exc)
    if completion.temperature_omitted:
        book.note_temperature_omitted(contest, request.sample_id)
    tokens = {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens}
    if completion.truncated or completion.output_tokens > policy.max_output_tokens:
        return book.record(contest, request.sample_id, "red_flag", "too_long", **tokens)
    try:
        move, next_state = hanoi.parse(completion.text, hanoi.disks_of(request.state))
    except hanoi.RedFlag as flag:
        return book.record(contest, request.sample_id, "red_flag", flag.reason, **tokens)
    return book.record(contest, request.sample_id, "vote", hanoi.candidate(move, next_state), **tokens)
