"""Every provider adapter against the simulated LLM over real HTTP on 127.0.0.1: what it sends, what
it makes of the answer, and the class of every failure the sim can be told to produce."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from maker_workers.domains import hanoi
from maker_workers.domains.base import RedFlag
from maker_workers.errors import ProviderError, RateLimited, Rejected, Unavailable
from maker_workers.providers import NAMES, Completion, Provider, provider_for
from maker_workers.providers.http import post_json
from maker_workers.simllm.server import REFUSAL, SimServer
from tests.test_providers import SERVERS

KEY = "sk-right-key-0123"
WRONG_KEY = "sk-wrong-key-4567"
KEYED = ("openai", "anthropic", "ollama")
STATE = hanoi.initial_state(3)
MESSAGES = hanoi.messages(STATE, None)

Serve = Callable[..., SimServer]


@pytest.fixture
def serve(start_sim: Callable[..., SimServer]) -> Serve:
    """Start simulated LLMs with the faults asked for and answers always right; all stop after the test."""
    exact = {"error_rate": 0.0, "malformed_rate": 0.0, "too_long_rate": 0.0}
    return lambda **config: start_sim(**(exact | config))


def adapter(name: str, server: SimServer, http: httpx.Client, key: str | None = KEY) -> Provider:
    base_url = server.url.removesuffix("/v1") if name == "ollama" else server.url
    return provider_for(name, "m1", base_url, key, http)


def stats(server: SimServer, http: httpx.Client) -> dict[str, Any]:
    return http.get(f"{server.url}/stats").json()


def failure(provider: Provider, messages: list[dict[str, str]] = MESSAGES) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        provider.complete(messages, temperature=0.1, max_tokens=100)
    return caught.value


@pytest.mark.parametrize("name", NAMES)
def test_each_adapter_speaks_its_shape_and_counts_what_the_server_bills(
    serve: Serve, http: httpx.Client, name: str
) -> None:
    server = serve(api_key=None if name == "sim" else KEY)
    sent: list[httpx.Request] = []
    with httpx.Client(timeout=10, event_hooks={"request": [sent.append]}) as recorded:
        provider = adapter(name, server, recorded, None if name == "sim" else KEY)
        completions = [
            provider.complete(MESSAGES, temperature=0.0, max_tokens=751),
            provider.complete(MESSAGES, temperature=None, max_tokens=300),
        ]
    served = stats(server, http)
    shape = SERVERS[name]
    assert [r.url.path for r in sent] == [shape.path] * 2
    assert (shape.key_of(sent[0]) is None) if name == "sim" else KEY in (shape.key_of(sent[0]) or "")
    bodies = [shape.sampling(json.loads(r.content)) for r in sent]
    assert bodies == [{"temperature": 0.0, "max_tokens": 751}, {"temperature": None, "max_tokens": 300}]
    assert hanoi.parse(completions[0].text, 3) == ((1, 0, 2), [[3, 2], [], [1]])
    assert not any(c.truncated for c in completions)
    billed = {"input_tokens": sum(c.input_tokens for c in completions)}
    billed["output_tokens"] = sum(c.output_tokens for c in completions)
    assert billed["input_tokens"] > 200 and served["served"] == billed
    assert served["by_model"] == {"m1": {"requests": 2, **billed}}
    assert served["by_status"] == {"200": 2} and served["requests"] == 2


@pytest.mark.parametrize("name", NAMES)
def test_an_answer_cut_at_max_tokens_is_truncated(serve: Serve, http: httpx.Client, name: str) -> None:
    server = serve(too_long_rate=0.999)
    completion = adapter(name, server, http).complete(MESSAGES, temperature=0.1, max_tokens=50)
    assert completion.truncated and completion.output_tokens == 50


@pytest.mark.parametrize("name", NAMES)
def test_a_429_is_rate_limited_with_the_servers_wait(serve: Serve, http: httpx.Client, name: str) -> None:
    caught = failure(adapter(name, serve(rate_429=1.0, retry_after_s=2), http))
    assert isinstance(caught, RateLimited) and caught.retry_after == 2.0
    assert str(caught).startswith(f"{name} at http://127.0.0.1:") and "429 Too Many Requests" in str(caught)


@pytest.mark.parametrize("name", NAMES)
def test_a_500_is_unavailable(serve: Serve, http: httpx.Client, name: str) -> None:
    caught = failure(adapter(name, serve(rate_500=1.0), http))
    assert isinstance(caught, Unavailable) and "500 Internal Server Error" in str(caught)


@pytest.mark.parametrize("name", NAMES)
def test_a_request_held_past_the_client_timeout_is_unavailable(serve: Serve, name: str) -> None:
    server = serve(rate_timeout=1.0, timeout_hold_s=5)
    with httpx.Client(timeout=0.2) as http:
        caught = failure(adapter(name, server, http))
    assert isinstance(caught, Unavailable) and "did not answer in time" in str(caught)


@pytest.mark.parametrize("name", KEYED)
def test_a_wrong_key_is_rejected_without_showing_it(serve: Serve, http: httpx.Client, name: str) -> None:
    caught = failure(adapter(name, serve(api_key=KEY), http, WRONG_KEY))
    message = str(caught)
    assert isinstance(caught, Rejected) and message.startswith(f"{name} at http://127.0.0.1:")
    assert "401 Unauthorized" in message and "MAKER_API_KEY" in message
    if name != "ollama":
        assert f"{name.upper()}_API_KEY / MAKER_API_KEY" in message
    assert WRONG_KEY not in message and KEY not in message


def test_a_missing_route_is_rejected_naming_model_and_base_url(serve: Serve, http: httpx.Client) -> None:
    server = serve()
    with pytest.raises(Rejected, match=r"answered 404 Not Found .*: check --model and --base-url$"):
        post_json(http, f"{server.url}/nothing", {"model": "m1"}, {}, provider="openai")


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_request_is_rejected_not_mistaken_for_temperature(serve: Serve, http: httpx.Client, name: str) -> None:
    server = serve()
    caught = failure(adapter(name, server, http), [{"role": "user", "content": "hello"}])
    assert isinstance(caught, Rejected) and "400 Bad Request" in str(caught)
    assert stats(server, http)["requests"] == 1  # asked once: no second try without the temperature


@pytest.mark.parametrize("name", NAMES)
def test_an_exhausted_account_is_rejected(serve: Serve, http: httpx.Client, name: str) -> None:
    caught = failure(adapter(name, serve(quota_exhausted=True), http))
    assert isinstance(caught, Rejected) and str(caught).endswith("add credit to the account")


@pytest.mark.parametrize("name", NAMES)
def test_a_refusal_is_an_answer_that_does_not_parse(serve: Serve, http: httpx.Client, name: str) -> None:
    server = serve(rate_refusal=1.0)
    completion: Completion = adapter(name, server, http).complete(MESSAGES, temperature=0.1, max_tokens=100)
    assert completion.text == REFUSAL
    with pytest.raises(RedFlag):
        hanoi.parse(completion.text, 3)
    assert stats(server, http)["served"]["output_tokens"] == completion.output_tokens > 0


def test_stats_count_every_request_by_status_and_when_it_arrived(serve: Serve, http: httpx.Client) -> None:
    server = serve(rate_500=0.5, seed=3)
    provider = adapter("openai", server, http)
    outcomes = []
    for _ in range(30):
        try:
            outcomes.append(provider.complete(MESSAGES, temperature=0.1, max_tokens=100).output_tokens)
        except Unavailable:
            outcomes.append(None)
    served = stats(server, http)
    ok = [tokens for tokens in outcomes if tokens is not None]
    assert served["by_status"] == {"200": len(ok), "500": 30 - len(ok)} and 0 < len(ok) < 30
    assert served["served"]["output_tokens"] == sum(ok)
    arrivals = served["arrivals"]
    assert len(arrivals) == served["requests"] == 30 and arrivals == sorted(arrivals)
