"""Providers through httpx's transport seam: one contract, every provider, and every failure in its class."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, NamedTuple

import httpx
import pytest

from maker_workers.errors import ConfigError, ProviderError, RateLimited, Rejected, Unavailable
from maker_workers.providers import NAMES, Completion, Provider, api_key_for, make_provider, provider_for
from maker_workers.providers.anthropic import cache_minimum, cacheable
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


def ollama_answer(text: str, truncated: bool = False) -> dict[str, Any]:
    return {
        "message": {"role": "assistant", "content": text},
        "done": True,
        "done_reason": "length" if truncated else "stop",
        "prompt_eval_count": 12,
        "eval_count": 7,
    }


class Server(NamedTuple):
    """What a server of one kind expects and answers."""

    path: str
    key_of: Callable[[httpx.Request], str | None]
    answer: Callable[..., dict[str, Any]]
    sampling: Callable[[dict[str, Any]], dict[str, Any]]  # where the body carries temperature and max tokens


def top_level(body: dict[str, Any]) -> dict[str, Any]:
    return {"temperature": body.get("temperature"), "max_tokens": body.get("max_tokens")}


def in_options(body: dict[str, Any]) -> dict[str, Any]:
    return {"temperature": body["options"].get("temperature"), "max_tokens": body["options"]["num_predict"]}


SERVERS = {
    "sim": Server("/v1/chat/completions", lambda r: r.headers.get("authorization"), openai_answer, top_level),
    "openai": Server("/v1/chat/completions", lambda r: r.headers.get("authorization"), openai_answer, top_level),
    "anthropic": Server("/v1/messages", lambda r: r.headers.get("x-api-key"), anthropic_answer, top_level),
    "ollama": Server("/api/chat", lambda r: r.headers.get("authorization"), ollama_answer, in_options),
}


def provider_with(name: str, handler: Callable[[httpx.Request], httpx.Response]) -> Provider:
    base_url = "http://llm.test" if name == "ollama" else "http://llm.test/v1"
    cfg = WorkerSettings(provider=name, api_key=KEY, base_url=base_url, model="m1")
    return make_provider(cfg, httpx.Client(transport=httpx.MockTransport(handler)))


def failure(name: str, response: httpx.Response, temperature: float | None = 0.0) -> ProviderError:
    provider = provider_with(name, lambda _: response)
    with pytest.raises(ProviderError) as caught:
        provider.complete(MESSAGES, temperature=temperature, max_tokens=5)
    assert KEY not in str(caught.value)
    return caught.value


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str) -> None:
    server = SERVERS[name]
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=server.answer("move = [1, 0, 2]"))

    provider = provider_with(name, handle)
    completion = provider.complete(MESSAGES, temperature=0.1, max_tokens=751)
    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("move = [1, 0, 2]", 12, 7)
    assert not completion.truncated
    body = json.loads(seen[0].content)
    assert server.sampling(body) == {"temperature": 0.1, "max_tokens": 751} and body["model"] == "m1"
    assert seen[0].url.path == server.path
    if name == "sim":
        assert server.key_of(seen[0]) is None  # the simulated LLM never gets the key
    else:
        assert KEY in (server.key_of(seen[0]) or "")
    provider.complete(MESSAGES, temperature=None, max_tokens=5)
    assert server.sampling(json.loads(seen[1].content))["temperature"] is None


def test_anthropic_gets_the_system_prompt_apart() -> None:
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        assert request.headers["anthropic-version"]
        return httpx.Response(200, json=anthropic_answer("ok"))

    provider_with("anthropic", handle).complete(MESSAGES, temperature=0.0, max_tokens=5)
    assert bodies[0]["system"] == "rules"
    assert bodies[0]["messages"] == [{"role": "user", "content": "state"}]


LONG_RULES = "Move the smallest disk clockwise on odd moves. " * 70  # 3,290 characters: over 1,024 tokens by estimate


def anthropic_bodies(
    messages: list[dict[str, str]], model: str = "claude-sonnet-4-5", **settings: Any
) -> tuple[dict[str, Any], Completion]:
    """The body the anthropic adapter sends for `messages`, and what it makes of a reply that wrote the cache."""
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        usage = {"input_tokens": 20, "cache_creation_input_tokens": 1_100, "cache_read_input_tokens": 0}
        return httpx.Response(200, json=anthropic_answer("ok") | {"usage": usage | {"output_tokens": 3}})

    cfg = WorkerSettings(provider="anthropic", api_key=KEY, base_url="http://llm.test/v1", model=model, **settings)
    completion = make_provider(cfg, httpx.Client(transport=httpx.MockTransport(handle))).complete(
        messages, temperature=0.0, max_tokens=5
    )
    return bodies[0], completion


def test_a_long_system_prompt_is_marked_for_anthropics_prompt_cache() -> None:
    body, completion = anthropic_bodies([{"role": "system", "content": LONG_RULES}, {"role": "user", "content": "s"}])
    assert body["system"] == [{"type": "text", "text": LONG_RULES, "cache_control": {"type": "ephemeral"}}]
    assert body["messages"] == [{"role": "user", "content": "s"}]
    # The write is counted among the input tokens, and apart.
    assert (completion.input_tokens, completion.cache_write_tokens, completion.cached_tokens) == (1_120, 1_100, 0)


def test_a_system_prompt_too_short_to_be_cached_stays_a_plain_string() -> None:
    body, _ = anthropic_bodies(MESSAGES)
    assert body["system"] == "rules"
    # 3,290 characters reach Sonnet's 1,024 tokens by estimate, not a Haiku model's 2,048.
    body, _ = anthropic_bodies([{"role": "system", "content": LONG_RULES}], model="claude-haiku-4-5")
    assert body["system"] == LONG_RULES
    body, _ = anthropic_bodies([{"role": "system", "content": LONG_RULES * 2}], model="claude-haiku-4-5")
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_the_prompt_cache_mark_is_off_with_the_setting() -> None:
    body, _ = anthropic_bodies([{"role": "system", "content": LONG_RULES}], prompt_cache=False)
    assert body["system"] == LONG_RULES


@pytest.mark.parametrize(
    ("model", "chars", "marked"),
    [
        ("claude-sonnet-4-5", 3_069, False),
        ("claude-sonnet-4-5", 3_070, True),
        ("claude-3-5-haiku", 6_141, False),
        ("claude-3-5-haiku", 6_142, True),
    ],
)
def test_the_cache_rule_is_the_models_minimum_at_three_characters_a_token(model: str, chars: int, marked: bool) -> None:
    assert cacheable("x" * chars, model) is marked and cache_minimum("claude-3-5-haiku-latest") == 2048


def test_ollama_asks_for_one_whole_answer() -> None:
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=ollama_answer("ok"))

    provider_with("ollama", handle).complete(MESSAGES, temperature=None, max_tokens=5)
    assert bodies[0]["stream"] is False and bodies[0]["options"] == {"num_predict": 5}
    assert bodies[0]["messages"] == MESSAGES


def test_an_ollama_answer_without_a_prompt_count_costs_no_input_tokens() -> None:
    answer = {k: v for k, v in ollama_answer("ok").items() if k != "prompt_eval_count"}
    completion = provider_with("ollama", lambda _: httpx.Response(200, json=answer)).complete(
        MESSAGES, temperature=0, max_tokens=5
    )
    assert (completion.input_tokens, completion.output_tokens) == (0, 7)


def test_an_openai_refusal_is_an_empty_answer() -> None:
    refused = openai_answer("")
    refused["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    completion = provider_with("openai", lambda _: httpx.Response(200, json=refused)).complete(
        MESSAGES, temperature=0, max_tokens=5
    )
    assert completion.text == ""


@pytest.mark.parametrize("name", NAMES)
def test_truncation_is_reported(name: str) -> None:
    answer = SERVERS[name].answer("move = [1", truncated=True)
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
            (httpx.Response(408, text="slow"), Unavailable),
            (httpx.Response(401, json={"error": {"message": "invalid x-api-key"}}), Rejected),
            (httpx.Response(403, json={"error": {"message": "no access"}}), Rejected),
            (httpx.Response(404, json={"error": "model 'm1' not found"}), Rejected),
            (httpx.Response(402, text="payment required"), Rejected),
            (httpx.Response(422, text="bad field"), Rejected),
            (httpx.Response(400, text="bad model"), Rejected),
            (httpx.Response(200, json={"nothing": 1}), ProviderError),
            (httpx.Response(200, text="not json"), ProviderError),
            (httpx.Response(200, json=[1, 2]), ProviderError),
        ]
    ],
)
def test_errors_map_to_our_tree(name: str, response: httpx.Response, error: type[Exception]) -> None:
    caught = failure(name, response)
    assert type(caught) is error
    assert name in str(caught) and "http://llm.test" in str(caught)


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (401, "check OPENAI_API_KEY / MAKER_API_KEY"),
        (403, "check that the key in OPENAI_API_KEY / MAKER_API_KEY may use this model"),
        (404, "check --model and --base-url"),
        (402, "add credit to the account"),
    ],
)
def test_a_rejection_says_what_to_do(status: int, advice: str) -> None:
    message = str(failure("openai", httpx.Response(status, json={"error": {"message": "no"}})))
    assert message.startswith(f"openai at http://llm.test/v1/chat/completions answered {status} ")
    assert message.endswith(advice)


def test_an_anthropic_key_problem_names_its_variable() -> None:
    message = str(failure("anthropic", httpx.Response(401, json={"error": {"message": "invalid x-api-key"}})))
    assert "(invalid x-api-key)" in message and "ANTHROPIC_API_KEY / MAKER_API_KEY" in message


@pytest.mark.parametrize(
    ("name", "response"),
    [
        ("openai", httpx.Response(429, json={"error": {"message": "quota", "type": "insufficient_quota"}})),
        ("openai", httpx.Response(429, json={"error": {"message": "quota", "code": "insufficient_quota"}})),
        (
            "anthropic",
            httpx.Response(
                400,
                json={
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "Your credit balance is too low to access"},
                },
            ),
        ),
    ],
)
def test_an_exhausted_account_is_rejected_not_retried(name: str, response: httpx.Response) -> None:
    caught = failure(name, response)
    assert isinstance(caught, Rejected) and str(caught).endswith("add credit to the account")


def test_a_key_the_server_echoes_is_not_repeated() -> None:
    echoed = {"error": {"message": "Incorrect API key provided: sk-test-****cret. Find yours at ...", "code": "x"}}
    message = str(failure("openai", httpx.Response(401, json=echoed)))
    assert "sk-test" not in message and "Incorrect API key provided: <key>" in message


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after": "3600"}, 120.0),  # capped
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_rate_limits_carry_the_servers_wait(headers: dict[str, str], wait: float | None) -> None:
    caught = failure("openai", httpx.Response(429, headers=headers, json={}))
    assert isinstance(caught, RateLimited) and caught.retry_after == wait


def test_a_retry_after_may_be_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    caught = failure("anthropic", httpx.Response(429, headers={"retry-after": when}, json={}))
    assert isinstance(caught, RateLimited) and caught.retry_after is not None and 25 < caught.retry_after <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert failure("anthropic", httpx.Response(429, headers={"retry-after": past}, json={})).retry_after == 0.0


def test_an_overloaded_server_may_say_when_to_come_back() -> None:
    caught = failure("openai", httpx.Response(503, headers={"retry-after": "4"}, text="overloaded"))
    assert isinstance(caught, Unavailable) and caught.retry_after == 4.0


@pytest.mark.parametrize("name", NAMES)
def test_connection_failures_are_unavailable(name: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(Unavailable):
        provider_with(name, refuse).complete(MESSAGES, temperature=0, max_tokens=5)


@pytest.mark.parametrize("name", NAMES)
def test_timeouts_are_unavailable(name: str) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(Unavailable, match="did not answer in time"):
        provider_with(name, hang).complete(MESSAGES, temperature=0, max_tokens=5)


def test_a_base_url_without_a_scheme_is_rejected() -> None:
    provider = provider_for("openai", "m1", "llm.test/v1", KEY, httpx.Client())
    with pytest.raises(Rejected, match="check --base-url"):
        provider.complete(MESSAGES, temperature=0, max_tokens=5)


@pytest.mark.parametrize("name", ["sim", "openai", "anthropic"])
def test_a_model_that_refuses_temperature_is_asked_without_it(name: str) -> None:
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "temperature" in body:
            return httpx.Response(400, json={"error": {"message": "Unsupported parameter: 'temperature'"}})
        return httpx.Response(200, json=SERVERS[name].answer("ok"))

    provider = provider_with(name, handle)
    first = provider.complete(MESSAGES, temperature=0.1, max_tokens=5)
    second = provider.complete(MESSAGES, temperature=0.0, max_tokens=5)
    assert first.temperature_omitted and second.temperature_omitted
    assert ["temperature" in b for b in bodies] == [True, False, False]  # asked once, then never again
    assert not provider.complete(MESSAGES, temperature=None, max_tokens=5).temperature_omitted


def test_other_refusals_are_not_mistaken_for_temperature() -> None:
    caught = failure("sim", httpx.Response(400, json={"error": {"message": "model not found"}}), temperature=0.1)
    assert isinstance(caught, Rejected) and "model not found" in str(caught)


def test_a_temperature_complaint_without_a_temperature_is_rejected() -> None:
    about = httpx.Response(400, json={"error": {"message": "temperature must be set"}})
    assert isinstance(failure("openai", about, temperature=None), Rejected)


def test_unknown_provider_and_missing_key_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("MAKER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match="MAKER_PROVIDER"):
        make_provider(WorkerSettings(provider="nope"), httpx.Client())
    with pytest.raises(ConfigError, match=r"unknown provider 'nope': use one of sim, openai, anthropic, ollama"):
        provider_for("nope", "m1", None, None, httpx.Client())
    for name, own in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")):
        with pytest.raises(ConfigError, match=rf"provider '{name}' needs an API key: set {own} \(or MAKER_API_KEY\)"):
            make_provider(WorkerSettings(provider=name, api_key=None), httpx.Client())
    make_provider(WorkerSettings(provider="ollama"), httpx.Client())  # a local Ollama needs no key


def test_each_provider_gets_its_own_key_and_maker_api_key_only_where_that_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAKER_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-anthropic")
    own = WorkerSettings()
    assert [api_key_for(n, own) for n in NAMES] == [None, "sk-openai", "sk-anthropic", None]
    monkeypatch.setenv("MAKER_API_KEY", KEY)  # an ensemble never sends one provider's key to another
    assert [api_key_for(n, WorkerSettings()) for n in NAMES] == [None, "sk-openai", "sk-anthropic", KEY]
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert api_key_for("anthropic", WorkerSettings()) == KEY


def test_settings_never_show_the_key() -> None:
    shown = repr(WorkerSettings(api_key=KEY, openai_api_key=KEY, anthropic_api_key=KEY))
    assert KEY not in shown
