"""Providers through httpx's transport seam: one contract, every provider."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from maker_workers.errors import ConfigError, ProviderError, RateLimited, Unavailable
from maker_workers.providers import NAMES, Provider, make_provider
from maker_workers.settings import WorkerSettings

KEY = "sk-test-secret"
MESSAGES = [{"role": "system", "content": "rules"}, {"role": "user", "content": "state"}]


def openai_answer(text: str, truncated: bool = False) -> dict[str, Any]:
    return {
        "choices": [
            {"message": {"role": "assistant", "content": text}, "finish_reason": "length" if truncated else "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7},
    }


def anthropic_answer(text: str, truncated: bool = False) -> dict[str, Any]:
    return {
        "type": "message",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }


# What a server of each kind expects and answers: its path, how it carries the key, its answer's shape.
SERVERS: dict[str, tuple[str, Callable[[httpx.Request], str | None], Callable[..., dict[str, Any]]]] = {
    "sim": ("/v1/chat/completions", lambda r: r.headers.get("authorization"), openai_answer),
    "openai": ("/v1/chat/completions", lambda r: r.headers.get("authorization"), openai_answer),
    "anthropic": ("/v1/messages", lambda r: r.headers.get("x-api-key"), anthropic_answer),
}


def provider_with(name: str, handler: Callable[[httpx.Request], httpx.Response]) -> Provider:
    cfg = WorkerSettings(provider=name, api_key=KEY, base_url="http://llm.test/v1", model="m1")
    return make_provider(cfg, httpx.Client(transport=httpx.MockTransport(handler)))


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str) -> None:
    path, key_of, answer = SERVERS[name]
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer("move = [1, 0, 2]"))

    provider = provider_with(name, handle)
    completion = provider.complete(MESSAGES, temperature=0.1, max_tokens=751)
    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("move = [1, 0, 2]", 12, 7)
    assert not completion.truncated
    body = json.loads(seen[0].content)
    assert body["max_tokens"] == 751 and body["temperature"] == 0.1 and body["model"] == "m1"
    assert seen[0].url.path == path
    if name == "sim":
        assert key_of(seen[0]) is None  # the simulated LLM never gets the key
    else:
        assert KEY in key_of(seen[0])
    provider.complete(MESSAGES, temperature=None, max_tokens=5)
    assert "temperature" not in json.loads(seen[1].content)


def test_anthropic_gets_the_system_prompt_apart() -> None:
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        assert request.headers["anthropic-version"]
        return httpx.Response(200, json=anthropic_answer("ok"))

    provider_with("anthropic", handle).complete(MESSAGES, temperature=0.0, max_tokens=5)
    assert bodies[0]["system"] == "rules"
    assert bodies[0]["messages"] == [{"role": "user", "content": "state"}]


@pytest.mark.parametrize("name", NAMES)
def test_truncation_is_reported(name: str) -> None:
    answer = SERVERS[name][2]("move = [1", truncated=True)
    provider = provider_with(name, lambda _: httpx.Response(200, json=answer))
    assert provider.complete(MESSAGES, temperature=0, max_tokens=5).truncated


@pytest.mark.parametrize(
    ("name", "response", "error"),
    [
        (n, r, e)
        for n in NAMES
        for r, e in [
            (httpx.Response(429, json={}), RateLimited),
            (httpx.Response(503, text="overloaded"), Unavailable),
            (httpx.Response(529, text="overloaded"), Unavailable),
            (httpx.Response(400, text="bad model"), ProviderError),
            (httpx.Response(200, json={"nothing": 1}), ProviderError),
            (httpx.Response(200, text="not json"), ProviderError),
            (httpx.Response(200, json=[1, 2]), ProviderError),
        ]
    ],
)
def test_errors_map_to_our_tree(name: str, response: httpx.Response, error: type[Exception]) -> None:
    provider = provider_with(name, lambda _: response)
    with pytest.raises(error) as caught:
        provider.complete(MESSAGES, temperature=0, max_tokens=5)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("name", NAMES)
def test_connection_failures_are_unavailable(name: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(Unavailable):
        provider_with(name, refuse).complete(MESSAGES, temperature=0, max_tokens=5)


@pytest.mark.parametrize("name", NAMES)
def test_a_model_that_refuses_temperature_is_asked_without_it(name: str) -> None:
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "temperature" in body:
            return httpx.Response(400, json={"error": {"message": "Unsupported parameter: 'temperature'"}})
        return httpx.Response(200, json=SERVERS[name][2]("ok"))

    provider = provider_with(name, handle)
    first = provider.complete(MESSAGES, temperature=0.1, max_tokens=5)
    second = provider.complete(MESSAGES, temperature=0.0, max_tokens=5)
    assert first.temperature_omitted and second.temperature_omitted
    assert ["temperature" in b for b in bodies] == [True, False, False]  # asked once, then never again
    assert not provider.complete(MESSAGES, temperature=None, max_tokens=5).temperature_omitted


def test_other_refusals_are_not_mistaken_for_temperature() -> None:
    refused = httpx.Response(400, json={"error": {"message": "model not found"}})
    provider = provider_with("sim", lambda _: refused)
    with pytest.raises(ProviderError, match="model not found"):
        provider.complete(MESSAGES, temperature=0.1, max_tokens=5)


def test_unknown_provider_and_missing_key_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="MAKER_PROVIDER"):
        make_provider(WorkerSettings(provider="nope"), httpx.Client())
    for name in ("openai", "anthropic"):
        with pytest.raises(ConfigError, match="MAKER_API_KEY"):
            make_provider(WorkerSettings(provider=name, api_key=None), httpx.Client())


def test_settings_never_show_the_key() -> None:
    assert KEY not in repr(WorkerSettings(api_key=KEY))
