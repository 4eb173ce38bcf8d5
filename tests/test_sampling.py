"""One sample through the worker pipeline: provider -> red flags -> the Lua script on a real Redis."""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from maker_workers import keys
from maker_workers.domains import hanoi
from maker_workers.providers.openai_compat import OpenAICompatible
from maker_workers.sampling import SamplePolicy, SampleRequest, draw_sample
from maker_workers.simllm.server import SimServer
from maker_workers.votes import Outcome, VoteBook
from tests.conftest import member

STATE = hanoi.initial_state(3)
FAST = SamplePolicy(max_output_tokens=750, retries=3, retry_max_wait_s=0.01)


TASK = hanoi.HanoiTask(3)


def request(sample_id: str = "s1", k: int = 1) -> SampleRequest:
    return SampleRequest(
        run_id="r",
        step=0,
        input_hash=TASK.input_hash(STATE, 0, None),
        state=STATE,
        previous=None,
        sample_id=sample_id,
        temperature=0.0,
        k=k,
    )


def answering(*responses: httpx.Response) -> tuple[OpenAICompatible, list[httpx.Request]]:
    calls: list[httpx.Request] = []
    queue = list(responses)

    def handle(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    client = httpx.Client(transport=httpx.MockTransport(handle))
    return OpenAICompatible(client, base_url="http://llm.test/v1", model="m", api_key=None), calls


def completion(text: str, tokens: int = 20, finish: str = "stop") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "choices": [{"message": {"content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 300, "completion_tokens": tokens},
        },
    )


def event_kinds(client: redis.Redis) -> list[str]:
    return [fields[b"kind"].decode() for _, fields in client.xrange(keys.events("r"))]


def test_a_sample_from_the_real_sim_over_http_is_a_vote(sim_server: SimServer, book: VoteBook) -> None:
    with httpx.Client() as http:
        provider = OpenAICompatible(http, base_url=sim_server.url, model="sim", api_key=None)
        recorded = draw_sample(request(), TASK, member(provider), book, FAST)
    assert recorded is not None and recorded.outcome is Outcome.DECIDED


def test_a_wrong_well_formed_answer_is_still_a_vote(book: VoteBook, client: redis.Redis) -> None:
    # the engine never consults ground truth: an illegal move wins if the votes say so
    provider, _ = answering(completion("move = [3, 0, 1]\nnext_state = [[2, 1], [3], []]"))
    recorded = draw_sample(request(), TASK, member(provider), book, FAST)
    assert recorded is not None and recorded.outcome is Outcome.DECIDED
    winner = client.hget(keys.step("r", 0, hanoi.input_hash(STATE, None)).status, "winner").decode()
    assert hanoi.from_candidate(winner) == ((3, 0, 1), [[2, 1], [3], []])


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]", tokens=751), "too_long"),
        (completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]", tokens=751, finish="length"), "truncated"),
        (completion("move = [1, 0, 2]\nnext_state = [[3, 2], []]"), "parse"),
        (completion("I would move disk 1 to peg 2."), "parse"),
    ],
)
def test_red_flags_are_discarded_and_counted_by_reason(
    book: VoteBook, client: redis.Redis, response: httpx.Response, reason: str
) -> None:
    provider, _ = answering(response)
    recorded = draw_sample(request(), TASK, member(provider), book, FAST)
    assert recorded is not None and recorded.outcome is Outcome.RED_FLAG
    assert client.hget(keys.stats("r"), f"red_flag:{reason}") == b"1"
    assert client.hlen(keys.step("r", 0, hanoi.input_hash(STATE, None)).tally) == 0
    # What the model said and why it was thrown away travel with the red flag.
    (_, event), *_ = client.xrange(keys.events("r"))
    said = {k.decode(): v.decode() for k, v in event.items()}
    assert said["kind"] == "red_flag" and said["reason"] == reason
    assert said["text"] == response.json()["choices"][0]["message"]["content"]
    assert said["detail"]


def test_a_red_flag_keeps_the_parsers_own_reason_and_a_bounded_excerpt(book: VoteBook, client: redis.Redis) -> None:
    text = "move = [1, 0, 2]\nnext_state = [[3, 2], [], []]" + " " * 5000
    provider, _ = answering(completion(text))
    draw_sample(request(), TASK, member(provider), book, FAST.model_copy(update={"sample_text_chars": 100}))
    (_, event), *_ = client.xrange(keys.events("r"))
    said = {k.decode(): v.decode() for k, v in event.items()}
    assert said["text"] == text[:100]
    assert "1..3 exactly once" in said["detail"] or "disks" in said["detail"], said["detail"]


def test_exactly_at_the_token_limit_is_not_a_red_flag(book: VoteBook) -> None:
    provider, _ = answering(completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]", tokens=750))
    recorded = draw_sample(request(), TASK, member(provider), book, FAST)
    assert recorded is not None and recorded.outcome is Outcome.DECIDED


def test_rate_limits_are_waited_out_and_logged(book: VoteBook, client: redis.Redis) -> None:
    provider, calls = answering(
        httpx.Response(429), httpx.Response(503), completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]")
    )
    recorded = draw_sample(request(), TASK, member(provider), book, FAST)
    assert recorded is not None and recorded.outcome is Outcome.DECIDED
    assert len(calls) == 3
    assert event_kinds(client)[:2] == ["rate_limit_wait", "retry"]


def test_a_provider_that_stays_down_gives_an_error_not_a_vote(book: VoteBook, client: redis.Redis) -> None:
    provider, calls = answering(httpx.Response(503, text="down"))
    recorded = draw_sample(request(), TASK, member(provider), book, FAST)
    assert recorded is not None and recorded.outcome is Outcome.ERROR
    assert len(calls) == FAST.retries + 1
    assert event_kinds(client) == ["retry"] * FAST.retries + ["error"]


def test_a_refused_request_is_not_retried_and_ends_the_run(book: VoteBook, client: redis.Redis) -> None:
    provider, calls = answering(httpx.Response(400, text="bad"))
    recorded = draw_sample(request(), TASK, member(provider), book, FAST)
    assert recorded is not None and recorded.outcome is Outcome.FATAL and len(calls) == 1
    assert b"400" in client.hget(keys.stats("r"), "fatal")


def test_a_decided_step_is_skipped_without_calling_the_provider(book: VoteBook, client: redis.Redis) -> None:
    provider, calls = answering(completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"))
    draw_sample(request("first"), TASK, member(provider), book, FAST)
    assert draw_sample(request("second"), TASK, member(provider), book, FAST) is None
    assert len(calls) == 1
    assert event_kinds(client)[-1] == "skipped"


def test_the_token_limit_is_sent_one_past_the_red_flag(book: VoteBook) -> None:
    provider, calls = answering(completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"))
    draw_sample(request(), TASK, member(provider), book, FAST)
    assert b'"max_tokens":751' in calls[0].content.replace(b" ", b"")


def test_an_omitted_temperature_is_reported_on_the_run(book: VoteBook, client: redis.Redis) -> None:
    refuse = httpx.Response(400, json={"error": {"message": "temperature is not supported with this model"}})
    provider, calls = answering(refuse, completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"))
    draw_sample(request("a", k=2), TASK, member(provider), book, FAST)
    draw_sample(request("b", k=2), TASK, member(provider), book, FAST)
    assert len(calls) == 3
    assert client.hget(keys.stats("r"), "temperature_omitted") == b"1"
    assert event_kinds(client).count("temperature_omitted") == 1


def test_the_first_samples_of_a_contest_skip_the_decided_check(book: VoteBook, client: redis.Redis) -> None:
    provider, calls = answering(completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"))
    draw_sample(request("first"), TASK, member(provider), book, FAST)  # k = 1: decided
    unchecked = request("second").model_copy(update={"may_be_decided": False})
    recorded = draw_sample(unchecked, TASK, member(provider), book, FAST)
    assert len(calls) == 2  # no skip without the check...
    assert recorded is not None and recorded.outcome is Outcome.LATE  # ...and still never counted


def test_only_one_sample_of_a_contest_is_drawn_at_the_first_temperature(book: VoteBook) -> None:
    """A guess reopened, or a resumed run, sends another 'first' sample: only one claims T=0."""
    provider, calls = answering(completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"))
    for sample_id in ("first", "second-first", "first"):  # the last one: Celery delivering it again
        first = request(sample_id, k=5).model_copy(update={"first": True, "later_temperature": 0.1})
        draw_sample(first, TASK, member(provider), book, FAST)
    temperatures = [json.loads(call.content).get("temperature") for call in calls]
    assert temperatures == [0.0, 0.1, 0.0]


def test_a_fresh_contests_first_sample_takes_the_t0_claim_as_its_vote_lands(
    book: VoteBook, client: redis.Redis
) -> None:
    """In a contest the orchestrator knows fresh, the first sample does not ask for the T=0 claim before its draw
    (a round trip a step): its vote takes it. A rival first sample drawn at T=0 all the same (a guess dropped with
    its first sample in flight, then reopened) is red-flagged: a contest never counts two T=0 votes."""
    fresh = request("fresh", k=5).model_copy(update={"first": True, "later_temperature": 0.1, "may_be_decided": False})
    seen: list[tuple[float | None, bytes | None]] = []  # each call's temperature, and who held the claim then

    def handle(call: httpx.Request) -> httpx.Response:
        seen.append((json.loads(call.content).get("temperature"), client.get(fresh.contest.keys.first)))
        return completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]")

    http = httpx.Client(transport=httpx.MockTransport(handle))
    provider = OpenAICompatible(http, base_url="http://llm.test/v1", model="m", api_key=None)
    assert draw_sample(fresh, TASK, member(provider), book, FAST).outcome is Outcome.VOTE
    assert seen == [(0.0, None)]  # drawn at T=0 without asking first
    assert client.get(fresh.contest.keys.first) == b"fresh"  # the vote took the claim
    rival = draw_sample(fresh.model_copy(update={"sample_id": "rival"}), TASK, member(provider), book, FAST)
    assert rival.outcome is Outcome.RED_FLAG and rival.reason == "second_first_sample"
    reopened = fresh.model_copy(update={"sample_id": "reopened", "may_be_decided": True})  # it asks, and is told
    assert draw_sample(reopened, TASK, member(provider), book, FAST).outcome is Outcome.VOTE
    assert [temperature for temperature, _ in seen] == [0.0, 0.0, 0.1]
    assert book.snapshot(fresh.contest).leader_votes == 2


def test_a_stopped_run_draws_not_even_the_first_samples_that_skip_the_decided_check(
    book: VoteBook, client: redis.Redis
) -> None:
    """A speculative window's first samples skip `wants`; after a cancel they must still not be paid for."""
    client.hset(keys.meta("r"), "stop", "cancelled")
    try:
        provider, calls = answering(completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"))
        unchecked = request("after-cancel").model_copy(update={"may_be_decided": False})
        assert draw_sample(unchecked, TASK, member(provider), book, FAST) is None
        assert calls == []
    finally:
        client.hdel(keys.meta("r"), "stop")


def test_a_sample_of_a_committed_step_is_not_drawn_once_its_status_is_gone(book: VoteBook, client: redis.Redis) -> None:
    """A committed contest's status lingers a minute; after that the checkpoint says the step is done."""
    client.hset(keys.checkpoint("r"), "step", 5)
    try:
        provider, calls = answering(completion("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"))
        assert draw_sample(request("late"), TASK, member(provider), book, FAST) is None  # step 0 < 5
        assert calls == []
    finally:
        client.delete(keys.checkpoint("r"))


def test_a_bare_answer_twice_alike_is_no_copy_but_the_same_reasoning_twice_is(
    book: VoteBook, client: redis.Redis
) -> None:
    bare = "move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"
    for i in range(2):  # alike by being right: nothing beside the answer says the draws were one
        draw_sample(request(k=5, sample_id=f"b{i}"), TASK, member(answering(completion(bare))[0]), book, FAST)
    status = keys.step("r", 0, hanoi.input_hash(STATE, None)).status
    assert client.hget(status, "copies") is None
    reasoned = "Disk 1 moves clockwise first.\n" + bare
    for i in range(2):
        draw_sample(request(k=5, sample_id=f"r{i}"), TASK, member(answering(completion(reasoned))[0]), book, FAST)
    assert client.hget(status, "copies") == b"1"
