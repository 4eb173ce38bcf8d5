"""The shared limits' Lua script on a real Redis, and how a sample waits for them."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
import redis

from maker_workers import keys
from maker_workers.domains import hanoi
from maker_workers.errors import ConfigError, RateLimited
from maker_workers.providers import Completion
from maker_workers.providers.openai_compat import OpenAICompatible
from maker_workers.ratelimit import ProviderLimits, RateLimiter, estimated_tokens
from maker_workers.sampling import SamplePolicy, SampleRequest, draw_sample
from maker_workers.simllm.server import SimServer
from maker_workers.votes import Outcome, VoteBook
from orchestrator.engine.store import RunStore
from tests.conftest import member

TASK = hanoi.HanoiTask(3)
STATE = TASK.initial_state()
ANSWER = "move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"


def limiter(client: redis.Redis, model: str = "m", **limits: Any) -> RateLimiter:
    return RateLimiter(client, "sim", model, ProviderLimits(**limits))


def request(k: int = 5) -> SampleRequest:
    return SampleRequest(
        run_id="r",
        step=0,
        input_hash=TASK.input_hash(STATE, 0, None),
        state=STATE,
        sample_id="s",
        temperature=0.1,
        k=k,
    )


def events(client: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(keys.events("r"))]


class Scripted:
    """A provider that raises or answers from a script, counting its calls."""

    def __init__(self, *outcomes: Exception | Completion) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def complete(self, messages: list[dict[str, str]], *, temperature: float | None, max_tokens: int) -> Completion:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def answer(input_tokens: int = 300, output_tokens: int = 20) -> Completion:
    return Completion(text=ANSWER, input_tokens=input_tokens, output_tokens=output_tokens)


def test_a_burst_goes_at_once_and_the_rest_is_spaced_at_the_rate(client: redis.Redis) -> None:
    rate = limiter(client, requests_per_minute=600, burst=3)  # 10 a second
    waits = [rate.reserve().wait_s for _ in range(8)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    for i, wait in enumerate(waits[3:], start=1):
        assert wait == pytest.approx(0.1 * i, abs=0.02)  # slot i after the burst: i intervals away


def test_workers_share_one_rate(client: redis.Redis) -> None:
    one = limiter(client, requests_per_minute=60, burst=1)
    other = limiter(redis.Redis(connection_pool=client.connection_pool), requests_per_minute=60, burst=1)
    assert one.reserve().wait_s == 0.0
    assert other.reserve().wait_s == pytest.approx(1.0, abs=0.02)  # the second worker waits for the first's slot
    assert limiter(client, "other-model", requests_per_minute=60, burst=1).reserve().wait_s == 0.0


@pytest.mark.parametrize(
    "limits",
    [{}, {"requests_per_minute": 0}, {"tokens_per_minute": -5}, {"requests_per_minute": 60, "burst": 0}],
)
def test_bad_limits_are_clear_errors(limits: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="rate limit"):
        ProviderLimits(**limits)


def test_tokens_are_spaced_by_their_count(client: redis.Redis) -> None:
    rate = limiter(client, tokens_per_minute=60_000, token_burst=1_000)  # 1,000 tokens a second
    assert rate.reserve(1_000).wait_s == 0.0  # the whole burst
    assert rate.reserve(500).wait_s == pytest.approx(0.5, abs=0.02)  # once 500 have drained
    # Bigger than the burst: it goes alone once everything booked before it has drained.
    assert rate.reserve(2_000).wait_s == pytest.approx(1.5, abs=0.02)
    assert rate.reserve(1).wait_s == pytest.approx(2.5 + 0.001, abs=0.02)


def test_settling_gives_back_unused_tokens_and_charges_extra_ones(client: redis.Redis) -> None:
    rate = limiter(client, tokens_per_minute=60_000, token_burst=1_000)
    assert rate.reserve(1_000).wait_s == 0.0
    rate.settle(1_000, 200)  # served far less than the estimate
    assert rate.reserve(1_000).wait_s == pytest.approx(0.2, abs=0.02)
    rate.settle(1_000, 1_500)  # served more
    assert rate.reserve(1_000).wait_s == pytest.approx(0.2 + 1.5, abs=0.02)


def test_a_request_waits_for_whichever_limit_is_tighter(client: redis.Redis) -> None:
    rate = limiter(client, requests_per_minute=600, burst=1, tokens_per_minute=60_000, token_burst=100)
    assert rate.reserve(100).wait_s == 0.0
    assert rate.reserve(10).wait_s == pytest.approx(0.1, abs=0.02)  # requests: 0.1 s apart
    assert rate.reserve(600).wait_s == pytest.approx(0.2, abs=0.02)  # requests still
    assert rate.reserve(100).wait_s == pytest.approx(0.8, abs=0.02)  # tokens: 600 went at 0.2 s, 1,000 a second


def test_no_booking_runs_past_the_bound_and_the_refused_book_nothing(client: redis.Redis) -> None:
    rate = limiter(client, requests_per_minute=600, burst=1, tokens_per_minute=600_000, max_ahead_s=1.0)
    booked = []
    for _ in range(1_000):
        before = client.mget(keys.rate_limit("sim", "m"), keys.rate_limit_tokens("sim", "m"))
        reservation = rate.reserve(100)
        if reservation.booked:
            booked.append(reservation.wait_s)
        else:
            assert 0 < reservation.wait_s <= 0.1 + 0.001  # the next slot comes within the bound one interval on
            assert client.mget(keys.rate_limit("sim", "m"), keys.rate_limit_tokens("sim", "m")) == before
    assert max(booked) <= 1.0
    assert 10 <= len(booked) < 100  # the first second's worth, and what time freed while the loop ran


def test_a_given_back_slot_is_free_again(client: redis.Redis) -> None:
    rate = limiter(client, requests_per_minute=60, burst=1, tokens_per_minute=60_000, token_burst=1_000)
    assert rate.reserve(1_000).wait_s == 0.0
    assert rate.reserve(1_000).wait_s == pytest.approx(1.0, abs=0.02)
    rate.release(1_000)
    assert rate.reserve(1_000).wait_s == pytest.approx(1.0, abs=0.02)


def test_waits_are_events_of_the_run(client: redis.Redis, sim_server: SimServer) -> None:
    rate = limiter(client, "sim", requests_per_minute=120, burst=1)  # 0.5 s apart
    with httpx.Client() as http:
        provider = OpenAICompatible(http, base_url=sim_server.url, model="sim", api_key=None)
        assert rate.reserve().wait_s == 0.0  # another worker just took the free slot
        draw_sample(request(), TASK, member(provider, rate), VoteBook(client), SamplePolicy())
    found = events(client)
    assert [e["kind"] for e in found] == ["rate_limit_wait", "vote"]
    assert "for the shared rate" in found[0]["detail"]
    assert float(found[0]["wait_s"]) == pytest.approx(0.5, abs=0.02)


def test_a_call_settles_to_the_tokens_served(client: redis.Redis) -> None:
    rate = limiter(client, tokens_per_minute=60_000)  # a token a millisecond
    draw_sample(request(), TASK, member(Scripted(answer(300, 20)), rate), VoteBook(client), SamplePolicy())
    assert client.pttl(keys.rate_limit_tokens("sim", "m")) == pytest.approx(320, abs=20)


def test_a_failed_call_gives_its_tokens_back(client: redis.Redis) -> None:
    rate = limiter(client, tokens_per_minute=60_000)
    policy = SamplePolicy(retries=0)
    recorded = draw_sample(request(), TASK, member(Scripted(RateLimited("429")), rate), VoteBook(client), policy)
    assert recorded is not None and recorded.outcome is Outcome.ERROR
    assert client.exists(keys.rate_limit_tokens("sim", "m")) == 0


# The provider's Retry-After beats our own backoff cap: asking sooner only earns another 429.
@pytest.mark.parametrize(("retry_after", "max_wait", "waited"), [(0.3, 5.0, 0.3), (0.6, 0.2, 0.6)])
def test_the_retry_waits_for_the_providers_retry_after(
    client: redis.Redis, retry_after: float, max_wait: float, waited: float
) -> None:
    provider = Scripted(RateLimited("429", retry_after=retry_after), answer())
    policy = SamplePolicy(retries=1, retry_max_wait_s=max_wait)
    started = time.monotonic()
    draw_sample(request(), TASK, member(provider), VoteBook(client), policy)
    assert time.monotonic() - started >= waited
    wait = next(e for e in events(client) if e["kind"] == "rate_limit_wait")
    assert waited <= float(wait["wait_s"]) <= max(max_wait, retry_after)


@pytest.mark.parametrize("max_ahead_s", [10.0, 0.1], ids=["booked", "refused"])
def test_a_sample_whose_step_is_decided_while_it_waits_is_dropped_uncalled(
    client: redis.Redis, max_ahead_s: float
) -> None:
    rate = limiter(client, requests_per_minute=60, burst=1, tokens_per_minute=600_000, max_ahead_s=max_ahead_s)
    assert rate.reserve().wait_s == 0.0  # another worker took the free slot: this sample waits a second
    taken = time.monotonic()
    book = VoteBook(client)
    decided_elsewhere = threading.Timer(0.05, book.record, (request(k=1).contest, "other", "vote", "x"))
    decided_elsewhere.start()
    provider = Scripted(answer())
    assert draw_sample(request(k=1), TASK, member(provider, rate), book, SamplePolicy()) is None
    decided_elsewhere.join()
    assert provider.calls == 0
    assert [e["kind"] for e in events(client)][-1] == "skipped"
    assert json.loads(client.lindex(keys.notify("r"), -1))["outcome"] == "skipped"  # the orchestrator hears of it
    # Nothing of the dropped sample stays booked: the next request gets the slot after the other worker's.
    expected = max(0.0, 1.0 - (time.monotonic() - taken))
    unbounded = limiter(client, requests_per_minute=60, burst=1, tokens_per_minute=600_000)
    assert unbounded.reserve(estimated_tokens(TASK.messages(STATE, 0, None), 751)).wait_s == pytest.approx(
        expected, abs=0.05
    )


def test_a_step_decided_while_a_retry_waits_is_not_asked_again(client: redis.Redis) -> None:
    book = VoteBook(client)
    decided_elsewhere = threading.Timer(0.05, book.record, (request(k=1).contest, "other", "vote", "x"))
    decided_elsewhere.start()
    provider = Scripted(RateLimited("429", retry_after=0.3), answer())
    assert draw_sample(request(k=1), TASK, member(provider), book, SamplePolicy()) is None
    decided_elsewhere.join()
    assert provider.calls == 1  # the 429, and no paid call after the decision


def test_a_stopped_runs_queued_samples_are_skipped_uncalled(client: redis.Redis) -> None:
    RunStore(client, "r").stop("budgetspent")
    provider = Scripted(answer())
    assert draw_sample(request(), TASK, member(provider), VoteBook(client), SamplePolicy()) is None
    assert provider.calls == 0 and [e["kind"] for e in events(client)] == ["skipped"]
