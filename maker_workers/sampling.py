"""One sample, start to finish: skip if decided, ask the provider, red-flag, record in Redis.

Kept apart from Celery so it can be driven directly in tests.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from functools import partial
from typing import Literal, TypeVar

from pydantic import BaseModel
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from maker_workers import metrics
from maker_workers.domains.answers import SemanticMatch
from maker_workers.domains.base import JSON, RedFlag, Task, canonical
from maker_workers.errors import ConfigError, ProviderError, RateLimited, Rejected, Retryable
from maker_workers.members import Member
from maker_workers.providers import Completion, Provider
from maker_workers.providers.embeddings import Embedding
from maker_workers.ratelimit import RateLimiter, estimated_tokens
from maker_workers.semantic import Embedder
from maker_workers.votes import Contest, Drawer, Meaning, Recorded, Said, VoteBook

T = TypeVar("T")


class SampleRequest(BaseModel):
    """The message the orchestrator sends for one LLM call. The task itself is stored with the run."""

    run_id: str
    step: int
    input_hash: str
    state: JSON
    previous: JSON = None  # the winning answer of the step before
    sample_id: str
    temperature: float | None
    # Asks to be the contest's one sample at `temperature` (T=0); one that finds another holds that claim is drawn
    # at `later_temperature` (see _draw).
    first: bool = False
    later_temperature: float | None = None  # what it is drawn at when another sample was first
    k: int
    # False for the first k samples of a contest nobody has voted in: a decision needs k votes, so
    # the worker skips asking Redis first. Were it decided after all (a guess reopened while its old
    # samples still ran), the cost is one wasted call: the vote is recorded late, never counted.
    may_be_decided: bool = True
    # Which model of an ensemble draws it (the worker takes it modulo the ensemble's size): the run
    # loop counts up per contest, so each step's samples rotate among the models.
    member: int = 0

    @property
    def contest(self) -> Contest:
        return Contest(run_id=self.run_id, step=self.step, input_hash=self.input_hash, k=self.k)


class SamplePolicy(BaseModel):
    max_output_tokens: int = 750
    retries: int = 4
    retry_max_wait_s: float = 30.0
    sample_text_chars: int = 2000  # what of a red-flagged answer its event keeps: enough to see why it was thrown away
    vote_text_chars: int = 500  # what of a vote's text its event keeps (the events stream holds 100,000 of them)


def said_of(
    completion: Completion, policy: SamplePolicy, detail: str = "", residue: str = "", vote: bool = True
) -> Said:
    """What the model said, as its vote or red flag keeps it: an excerpt, a digest of the whole text, the parser's
    reason. Only a text that says more than its answer (`residue`, its reasoning) gets a digest: two such texts
    alike byte for byte say the model is sampled near-deterministically (copies), while a bare answer (`ANSWER: 42`,
    a Hanoi move and state of any length) is alike in two samples by being right."""
    digest = hashlib.blake2b(completion.text.encode(), digest_size=8).hexdigest() if residue.strip() else ""
    # A red flag keeps more of its text than a vote: the answers thrown away are the ones to read whole.
    excerpt = completion.text[: policy.vote_text_chars if vote else policy.sample_text_chars]
    call = uuid.uuid4().hex[:16]  # this call, once: a record sent again (a lost reply) bills nothing more
    return Said(
        text=excerpt,
        digest=digest,
        detail=detail[:500],
        cached_tokens=completion.cached_tokens,
        cache_write_tokens=completion.cache_write_tokens,
        call=call,
    )


def _retry_wait(policy: SamplePolicy) -> Callable[[RetryCallState], float]:
    """The provider's Retry-After when it gave one (already capped where it is read), else random backoff
    (at most `retry_max_wait_s`): asking again sooner than the provider said only earns another 429."""
    backoff = wait_random_exponential(multiplier=0.2, max=policy.retry_max_wait_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return max(exc.retry_after, backoff(state))
        return backoff(state)

    return wait


def _call(
    provider: Provider,
    messages: list[dict[str, str]],
    request: SampleRequest,
    policy: SamplePolicy,
    limiter: RateLimiter | None,
    on_wait: Callable[[str, float, str], None],
    wanted: Callable[[], bool],
    max_tokens: int,
) -> Completion | None:
    """The completion, or None when `wanted` turned False while the sample waited (shared limits, retries)."""
    # One token past the limit lets us tell "exactly at the limit" from "over it".
    ask = partial(provider.complete, messages, temperature=request.temperature, max_tokens=max_tokens + 1)
    estimate = estimated_tokens(messages, max_tokens + 1)
    return _retried(ask, estimate, lambda c: c.input_tokens + c.output_tokens, policy, limiter, on_wait, wanted)


def _retried(
    ask: Callable[[], T],
    estimate: int,
    served: Callable[[T], int],
    policy: SamplePolicy,
    limiter: RateLimiter | None,
    on_wait: Callable[[str, float, str], None],
    wanted: Callable[[], bool],
) -> T | None:
    """`ask()` under the shared rate limit and the retry policy (completions and embeddings alike), or None
    when `wanted` turned False while it waited; `served` reads the tokens a reply was billed."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        kind = "rate_limit_wait" if isinstance(exc, RateLimited) else "retry"
        sleep = state.next_action.sleep if state.next_action else 0.0
        on_wait(kind, sleep, f"attempt {state.attempt_number}: {exc}")

    def on_limit(wait: float, booked: bool) -> None:
        why = "booked" if booked else "fully booked, asking again"
        on_wait("rate_limit_wait", wait, f"{wait:.3f} s for the shared rate ({why})")

    for attempt in Retrying(
        retry=retry_if_exception_type(Retryable),
        stop=stop_after_attempt(policy.retries + 1),
        wait=_retry_wait(policy),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            if attempt.retry_state.attempt_number > 1 and not wanted():
                return None  # decided (or the run stopped) while the retry waited: no call to pay for
            if limiter is None:
                return ask()
            if not limiter.acquire(estimate, on_limit, wanted):
                return None
            try:
                reply = ask()
            except Exception:
                limiter.settle(estimate, 0)  # a failed call served nothing
                raise
            # A provider that reports no usage is taken to have served the estimate.
            limiter.settle(estimate, served(reply) or estimate)
            return reply
    raise AssertionError("unreachable: tenacity reraises")


def record_failure(book: VoteBook, request: SampleRequest, exc: Exception, drawn_by: Drawer | None = None) -> Recorded:
    """A sample that could not be drawn is recorded as an error: the orchestrator hears of every sample.
    A refusal no retry can fix is `fatal`: its message (provider, status, what to do) ends the run."""
    if isinstance(exc, Rejected):
        return book.record(request.contest, request.sample_id, "fatal", str(exc)[:500], drawn_by=drawn_by)
    reason = f"{type(exc).__name__}: {exc}"[:300]
    return book.record(request.contest, request.sample_id, "error", reason, drawn_by=drawn_by)


def draw_sample(
    request: SampleRequest,
    task: Task,
    member: Member,
    book: VoteBook,
    policy: SamplePolicy,
    *,
    by_model: bool = False,
    embedder: Embedder | None = None,
    variant: int = 0,
) -> Recorded | None:
    """Returns what the vote script recorded, or None when the step was decided before the model was
    called. `by_model` counts the vote by model too (an ensemble); `embedder` embeds the answers of a task
    voted on by meaning; `variant` picks the task's phrasing of the prompt. Counted for the worker's metrics."""
    with metrics.IN_FLIGHT.track_inprogress():
        recorded = _draw(request, task, member, book, policy, by_model, embedder, variant)
    metrics.sampled(member.label, recorded)
    return recorded


def _draw(
    request: SampleRequest,
    task: Task,
    member: Member,
    book: VoteBook,
    policy: SamplePolicy,
    by_model: bool,
    embedder: Embedder | None,
    variant: int = 0,
) -> Recorded | None:
    contest = request.contest
    if book.stopped(contest.run_id) or (request.may_be_decided and not book.wants(contest)):
        book.skip(contest, request.sample_id)
        return None

    def on_wait(kind: str, wait_s: float, detail: str) -> None:
        if kind == "rate_limit_wait":
            metrics.waited(member.label, wait_s)
        book.event(contest, request.sample_id, kind, wait_s=f"{wait_s:.3f}", detail=detail)

    def wanted() -> bool:  # asked after every wait: a wait costs far more than this look-up
        return book.wants(contest)

    # A first sample asks for the T=0 claim before the draw only when its contest may have been opened before (a
    # guess reopened, a resumed run): a second first sample is then drawn at the later temperature. In a contest
    # the orchestrator knows fresh there is no other to race, and its vote takes the claim as it lands (the vote
    # script red-flags a second T=0 vote all the same): one round trip less a step.
    if request.first and request.may_be_decided and not book.claim_first(contest, request.sample_id):
        request = request.model_copy(update={"temperature": request.later_temperature, "first": False})
    max_tokens = task.max_output_tokens or policy.max_output_tokens
    messages = task.messages(request.state, request.step, request.previous, variant)
    unpaid = Drawer(model=member.label, cost_nusd=0, by_model=by_model)  # a failed call served nothing
    try:
        completion = _call(member.provider, messages, request, policy, member.limiter, on_wait, wanted, max_tokens)
    except ProviderError as exc:
        return record_failure(book, request, exc, unpaid)
    if completion is None:  # decided, or the run stopped, while it waited
        book.skip(contest, request.sample_id)
        return None
    if completion.temperature_omitted:
        book.note_temperature_omitted(contest, request.sample_id)
    cost = member.cost_nusd(
        completion.input_tokens, completion.output_tokens, completion.cached_tokens, completion.cache_write_tokens
    )
    metrics.served(member.label, completion.input_tokens, completion.output_tokens, cost)
    drawn_by = unpaid.model_copy(update={"cost_nusd": cost})

    def record(
        kind: Literal["vote", "red_flag"],
        value: str,
        payload: str = "",
        meaning: Meaning | None = None,
        detail: str = "",
        residue: str = "",
    ) -> Recorded:
        return book.record(
            contest,
            request.sample_id,
            kind,
            value,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            payload=payload,
            drawn_by=drawn_by,
            meaning=meaning,
            first=request.first,  # the vote script counts one vote drawn at the first temperature per contest
            said=said_of(completion, policy, detail, residue, vote=kind == "vote"),
        )

    # The paper's over-long rule, seen from both sides: the provider cut the answer at the limit we asked for (one
    # token past ours), or it says it wrote more than ours.
    if completion.truncated:
        return record("red_flag", "truncated", detail=f"the provider stopped the answer at {max_tokens + 1} tokens")
    if completion.output_tokens > max_tokens:
        return record("red_flag", "too_long", detail=f"{completion.output_tokens} tokens, over {max_tokens}")
    try:
        key, answer = task.parse(completion.text, request.state)
    except RedFlag as flag:
        return record("red_flag", flag.reason, detail=flag.detail)
    payload = canonical(answer)
    residue = task.residue(completion.text)
    if task.semantic is None:
        return record("vote", key, "" if payload == key else payload, residue=residue)
    if embedder is None:
        raise ConfigError(f"the task votes on meaning ({task.semantic.embeddings}) but the worker has no embedder")
    try:
        meaning = _meaning(task.semantic, embedder, answer, policy, on_wait, wanted)
    except RedFlag as flag:
        return record("red_flag", flag.reason, detail=flag.detail)
    except ProviderError as exc:
        return record_failure(book, request, exc, drawn_by)
    if meaning is None:  # decided, or the run stopped, while it waited: the completion was paid for, so it counts
        return record("red_flag", "unembedded")
    total = None if cost is None or meaning.cost_nusd is None else cost + meaning.cost_nusd
    drawn_by = drawn_by.model_copy(update={"cost_nusd": total})
    return record("vote", key, "" if payload == key else payload, meaning, residue=residue)


def embedded(
    embedder: Embedder,
    text: str,
    policy: SamplePolicy,
    on_wait: Callable[[str, float, str], None] = lambda *_: None,
    wanted: Callable[[], bool] = lambda: True,
) -> Embedding | None:
    """One text's embedding under the shared rate limit and the retry policy, as a completion is drawn; None when
    `wanted` turned False while it waited."""
    ask, estimate = partial(embedder.model.embed, text), estimated_tokens([{"content": text}], 0)
    return _retried(ask, estimate, lambda e: e.tokens, policy, embedder.limiter, on_wait, wanted)


def _meaning(
    semantic: SemanticMatch,
    embedder: Embedder,
    answer: JSON,
    policy: SamplePolicy,
    on_wait: Callable[[str, float, str], None],
    wanted: Callable[[], bool],
) -> Meaning | None:
    """What the vote script needs to vote on the answer's meaning: its embedding, under the same rate limits and
    retries as a completion; None when `wanted` turned False while it waited."""
    group, text = semantic.split(answer)
    embedding = embedded(embedder, text, policy, on_wait, wanted)
    return None if embedding is None else embedder.meaning(semantic, group, embedding)
