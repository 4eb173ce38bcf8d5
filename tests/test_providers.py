"""Providers through httpx's transport seam: one contract, every provider."""

from __future__ import annotations

import json

import httpx
import pytest

from maker_workers.errors import ConfigError, ProviderError, RateLimited, Unavailable
from maker_workers.providers import NAMES, make_provider
from maker_workers.settings import WorkerSettings

ANSWER = {
    "choices": [{"message": {"role": "assistant", "content": "move = [1, 0, 2]"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7},
}


def provider_with(name: str, handler: httpx.MockTransport) -> object:
    cfg = WorkerSettings(provider=name, api_key="sk-test-secret", base_url="http://llm.test/v1", model="m1")
    return make_provider(cfg, httpx.Client(transport=handler))


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    provider = provider_with(name, httpx.MockTransport(handle))
    completion = provider.complete([{"role": "user", "content": "hi"}], temperature=0.1, max_tokens=751)
    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("move = [1, 0, 2]", 12, 7)
    body = json.loads(seen[0].content)
    assert body["max_tokens"] == 751 and body["temperature"] == 0.1 and body["model"] == "m1"
    assert seen[0].url == "http://llm.test/v1/chat/completions"
    provider.complete([{"role": "user", "content": "hi"}], temperature=None, max_tokens=5)
    assert "temperature" not in json.loads(seen[1].content)  # models that reject it get none


@pytest.mark.parametrize(
    ("name", "response", "error"),
    [
        (n, r, e)
        for n in NAMES
        for r, e in [
            (httpx.Response(429, json={}), RateLimited),
            (httpx.Response(503, text="overloaded"), Unavailable),
            (httpx.Response(400, text="bad model"), ProviderError),
            (httpx.Response(200, json={"nothing": 1}), ProviderError),
            (httpx.Response(200, text="not json"), ProviderError),
        ]
    ],
)
def test_errors_map_to_our_tree(name: str, response: httpx.Response, error: type[Exception]) -> None:
    provider = provider_with(name, httpx.MockTransport(lambda _: response))
    with pytest.raises(error) as caught:
        provider.complete([{"role": "user", "content": "hi"}], temperature=0, max_tokens=5)
    assert "sk-test-secret" not in str(caught.value)


def test_connection_failures_are_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(Unavailable):
        provider_with("sim", httpx.MockTransport(refuse)).complete([], temperature=0, max_tokens=5)


def test_truncation_is_reported() -> None:
    answer = {**ANSWER, "choices": [{**ANSWER["choices"][0], "finish_reason": "length"}]}
    provider = provider_with("sim", httpx.MockTransport(lambda _: httpx.Response(200, json=answer)))
    assert provider.complete([], temperature=0, max_tokens=5).truncated


def test_openai_sends_the_key_and_sim_does_not() -> None:
    headers: dict[str, str | None] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        headers[request.url.host] = request.headers.get("authorization")
        return httpx.Response(200, json=ANSWER)

    for name in NAMES:
        provider_with(name, httpx.MockTransport(handle)).complete([], temperature=0, max_tokens=5)
        assert headers.pop("llm.test") == ("Bearer sk-test-secret" if name == "openai" else None)


def test_unknown_provider_and_missing_key_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="MAKER_PROVIDER"):
        make_provider(WorkerSettings(provider="nope"), httpx.Client())
    with pytest.raises(ConfigError, match="MAKER_API_KEY"):
        make_provider(WorkerSettings(provider="openai", api_key=None), httpx.Client())


def test_settings_never_show_the_key() -> None:
    assert "sk-test-secret" not in repr(WorkerSettings(api_key="sk-test-secret"))


@pytest.mark.parametrize("name", NAMES)
def test_a_model_that_refuses_temperature_is_asked_without_it(name: str) -> None:
    bodies: list[dict] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "temperature" in body:
            return httpx.Response(400, json={"error": {"message": "Unsupported parameter: 'temperature'"}})
        return httpx.Response(200, json=ANSWER)

    provider = provider_with(name, httpx.MockTransport(handle))
    first = provider.complete([], temperature=0.1, max_tokens=5)
    second = provider.complete([], temperature=0.0, max_tokens=5)
    assert first.temperature_omitted and second.temperature_omitted
    assert ["temperature" in b for b in bodies] == [True, False, False]  # asked once, then never again
    assert not provider.complete([], temperature=None, max_tokens=5).temperature_omitted


def test_other_refusals_are_not_mistaken_for_temperature() -> None:
    refused = httpx.Response(400, json={"error": {"message": "model not found"}})
    provider = provider_with("sim", httpx.MockTransport(lambda _: refused))
    with pytest.raises(ProviderError, match="model not found"):
        provider.complete([], temperature=0.1, max_tokens=5)
