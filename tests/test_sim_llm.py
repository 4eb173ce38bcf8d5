"""The simulated LLM over real HTTP on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from maker_workers.domains import hanoi
from maker_workers.errors import ProviderError
from maker_workers.providers import provider_for
from maker_workers.simllm import inprocess
from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SimServer
from tests.conftest import ROOT, run_cli


def chat(http: httpx.Client, url: str, state: hanoi.State, previous: hanoi.Move | None, **extra: object) -> dict:
    response = http.post(
        f"{url}/chat/completions", json={"model": "sim", "messages": hanoi.messages(state, previous), **extra}
    )
    response.raise_for_status()
    return response.json()


def test_answers_like_an_openai_server(sim_server: SimServer, http: httpx.Client) -> None:
    body = chat(http, sim_server.url, hanoi.initial_state(3), None, temperature=0)
    text = body["choices"][0]["message"]["content"]
    assert hanoi.parse(text, 3) == ((1, 0, 2), [[3, 2], [], [1]])
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 100 and 0 < usage["completion_tokens"] < 100
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_temperature_zero_is_deterministic(http: httpx.Client) -> None:
    server = SimServer("127.0.0.1", 0, SimConfig(error_rate=0.45, seed=11))
    server.start_in_thread()
    try:
        state, previous = [[4, 3], [1], [2]], (2, 0, 2)
        at_zero = {
            chat(http, server.url, state, previous, temperature=0)["choices"][0]["message"]["content"]
            for _ in range(15)
        }
        warm = {
            chat(http, server.url, state, previous, temperature=0.1)["choices"][0]["message"]["content"]
            for _ in range(40)
        }
    finally:
        server.shutdown()
        server.server_close()
    assert len(at_zero) == 1
    assert len(warm) > 1


def test_over_long_answers_stop_at_max_tokens(http: httpx.Client) -> None:
    server = SimServer("127.0.0.1", 0, SimConfig(too_long_rate=0.999, malformed_rate=0.0))
    server.start_in_thread()
    try:
        body = chat(http, server.url, hanoi.initial_state(3), None, temperature=0.1, max_tokens=751)
    finally:
        server.shutdown()
        server.server_close()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 751


@pytest.mark.parametrize(
    ("payload", "status"),
    [({"model": "sim", "messages": [{"role": "user", "content": "hello"}]}, 400), ({"model": "sim"}, 400)],
)
def test_bad_requests_get_a_clear_400(sim_server: SimServer, http: httpx.Client, payload: dict, status: int) -> None:
    response = http.post(f"{sim_server.url}/chat/completions", json=payload)
    assert response.status_code == status
    assert "cannot answer" in response.json()["error"]["message"]


def test_cli_rejects_an_impossible_error_rate() -> None:
    result = run_cli("sim-llm", "serve", "--port", "0", "--sim-error-rate", "0.7")
    assert result.returncode == 2
    assert "--sim-error-rate" in result.stderr and "0.5" in result.stderr


def test_a_broken_puzzle_still_gets_an_answer(sim_server: SimServer, http: httpx.Client) -> None:
    # after a wrong commit the state can be one the strategy has no move for; a model still answers
    for state, previous in [([[1, 3], [2], []], (1, 2, 0)), ([[1, 3], [2], []], (2, 0, 1))]:
        with pytest.raises(hanoi.IllegalMove):
            hanoi.strategy_move(state, previous)
        body = chat(http, sim_server.url, state, previous, temperature=0.1)
        move, next_state = hanoi.parse(body["choices"][0]["message"]["content"], 3)
        assert move in hanoi.legal_moves(state) and next_state == hanoi.apply_move(state, move)


def test_answers_like_an_anthropic_server(sim_server: SimServer, http: httpx.Client) -> None:
    system, user = hanoi.messages(hanoi.initial_state(3), None)
    response = http.post(
        f"{sim_server.url}/messages",
        json={
            "model": "claude-sim",
            "max_tokens": 100,
            "temperature": 0,
            "system": system["content"],
            "messages": [{"role": "user", "content": [{"type": "text", "text": user["content"]}]}],
        },
    )
    body = response.json()
    assert body["type"] == "message" and body["stop_reason"] == "end_turn" and body["model"] == "claude-sim"
    assert hanoi.parse(body["content"][0]["text"], 3) == ((1, 0, 2), [[3, 2], [], [1]])
    as_openai = chat(http, sim_server.url, hanoi.initial_state(3), None, temperature=0)
    assert body["usage"]["input_tokens"] == as_openai["usage"]["prompt_tokens"]  # the system prompt counts
    assert body["usage"]["output_tokens"] == as_openai["usage"]["completion_tokens"]


def test_answers_like_ollama(start_sim: Callable[..., SimServer], http: httpx.Client) -> None:
    server = start_sim(too_long_rate=0.999, malformed_rate=0.0)
    root = server.url.removesuffix("/v1")
    request = {"model": "llama-sim", "messages": hanoi.messages(hanoi.initial_state(3), None), "stream": False}
    body = http.post(f"{root}/api/chat", json=request | {"options": {"temperature": 0.1, "num_predict": 40}}).json()
    assert body["done"] is True and body["done_reason"] == "length" and body["eval_count"] == 40
    assert body["message"]["role"] == "assistant" and body["prompt_eval_count"] > 100
    unlimited = http.post(f"{root}/api/chat", json=request | {"options": {"num_predict": -1}}).json()
    assert unlimited["done_reason"] == "stop" and unlimited["eval_count"] > 40


def test_faults_leave_the_answers_as_they_were(start_sim: Callable[..., SimServer], http: httpx.Client) -> None:
    state, previous = [[4, 3], [1], [2]], (2, 0, 2)
    plain, flaky = start_sim(error_rate=0.4, seed=5), start_sim(error_rate=0.4, seed=5, rate_500=0.3, rate_429=0.2)
    expected = [
        chat(http, plain.url, state, previous, temperature=0.5)["choices"][0]["message"]["content"] for _ in range(20)
    ]
    answered: list[str] = []
    while len(answered) < 20:
        request = {"model": "sim", "messages": hanoi.messages(state, previous), "temperature": 0.5}
        response = http.post(f"{flaky.url}/chat/completions", json=request)
        if response.status_code == 200:
            answered.append(response.json()["choices"][0]["message"]["content"])
    assert answered == expected
    assert len(set(expected)) > 1


def test_a_429_says_when_to_come_back(start_sim: Callable[..., SimServer], http: httpx.Client) -> None:
    server = start_sim(rate_429=1.0, retry_after_s=0.25)
    request = {"model": "sim", "messages": hanoi.messages(hanoi.initial_state(3), None)}
    response = http.post(f"{server.url}/chat/completions", json=request)
    assert response.status_code == 429 and response.headers["retry-after"] == "0.25"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_key_is_checked_only_when_one_is_set(start_sim: Callable[..., SimServer], http: httpx.Client) -> None:
    server = start_sim(api_key="sim-key", error_rate=0.0, malformed_rate=0.0, too_long_rate=0.0)
    request = {"model": "sim", "messages": hanoi.messages(hanoi.initial_state(3), None)}
    wrong = http.post(f"{server.url}/chat/completions", json=request, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert "nope" not in wrong.text
    for headers in ({"authorization": "Bearer sim-key"}, {"x-api-key": "sim-key"}):
        assert http.post(f"{server.url}/chat/completions", json=request, headers=headers).status_code == 200


def test_an_exhausted_account_answers_every_request_429(
    start_sim: Callable[..., SimServer], http: httpx.Client
) -> None:
    server = start_sim(quota_exhausted=True)
    request = {"model": "sim", "messages": hanoi.messages(hanoi.initial_state(3), None)}
    for _ in range(3):
        response = http.post(f"{server.url}/chat/completions", json=request)
        assert response.status_code == 429 and response.json()["error"]["type"] == "insufficient_quota"


def test_a_request_picked_to_time_out_is_hung_up_on(start_sim: Callable[..., SimServer], http: httpx.Client) -> None:
    server = start_sim(rate_timeout=1.0, timeout_hold_s=0.05)
    request = {"model": "sim", "messages": hanoi.messages(hanoi.initial_state(3), None)}
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"{server.url}/chat/completions", json=request)
    assert http.get(f"{server.url}/stats").json()["by_status"] == {"timeout": 1}


def test_stats_say_what_was_served(sim_server: SimServer, http: httpx.Client) -> None:
    first = chat(http, sim_server.url, hanoi.initial_state(3), None, temperature=0)
    http.post(f"{sim_server.url}/chat/completions", json={"model": "sim"})  # 400: asked, not served
    root = sim_server.url.removesuffix("/v1")
    stats = http.get(f"{root}/stats").json()
    assert stats == http.get(f"{sim_server.url}/stats").json()  # reading them is not a request
    tokens = {"input_tokens": first["usage"]["prompt_tokens"], "output_tokens": first["usage"]["completion_tokens"]}
    assert stats["requests"] == 2 and stats["by_status"] == {"200": 1, "400": 1}
    assert stats["served"] == tokens and stats["by_model"] == {"sim": {"requests": 1, **tokens}}
    assert len(stats["arrivals"]) == 2 and stats["arrivals"][0] <= stats["arrivals"][1] <= time.monotonic()


@pytest.mark.parametrize(
    "config", [SimConfig(), SimConfig(seed=4, rate_429=0.1, timeout_hold_s=2, api_key="k", quota_exhausted=True)]
)
def test_the_cli_takes_every_config_field_as_the_embedded_cluster_passes_it(config: SimConfig) -> None:
    argv = [sys.executable, "-m", "orchestrator.interfaces.cli", "sim-llm", "serve", "--port", "0"]
    for name, value in config.model_dump().items():  # as orchestrator.cluster.embedded builds them: None, False too
        argv += ["--seed" if name == "seed" else f"--sim-{name.replace('_', '-')}", str(value)]
    with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            served = httpx.get(f"{url}/health").json()["config"]
        finally:
            proc.terminate()
    assert served == config.model_dump()


def test_a_revised_answer_has_a_wrong_draft_before_the_one_that_counts(
    start_sim: Callable[..., SimServer], http: httpx.Client
) -> None:
    server = start_sim(revised_rate=1.0, error_rate=0.0, malformed_rate=0.0, too_long_rate=0.0)
    state = [[3], [2], [1]]  # after two moves: the next is disk 1 from peg 2 to peg 1
    text = chat(http, server.url, state, (2, 0, 1), temperature=0)["choices"][0]["message"]["content"]
    assert text.count("move = ") == 2 and text.count("next_state = ") == 2
    assert hanoi.parse(text, 3) == ((1, 2, 1), [[3], [2, 1], []])  # the last one counts
    assert hanoi.parse(text.split("Wait")[0], 3)[0] != (1, 2, 1)  # the draft was wrong


def test_worker_processes_serving_the_sim_in_process_draw_apart() -> None:
    """Every worker process builds its own in-process sim from the same config: with one seeded sequence each,
    their n-th answers to a prompt were the same, so a contest's votes from two workers came in correlated pairs
    (a 16-disk run committed a wrong move). Above T=0 they must draw apart; at T=0 they still agree."""
    config = SimConfig(error_rate=0.45, malformed_rate=0.0, too_long_rate=0.0, seed=11)
    state, previous = [[4, 3], [1], [2]], (2, 0, 2)
    answers: list[list[str]] = []
    for _ in range(2):  # what two worker processes do, each at its start
        with inprocess.client(config) as client:
            answers.append(
                [
                    chat(client, inprocess.URL, state, previous, temperature=t)["choices"][0]["message"]["content"]
                    for t in [0.0] + [0.1] * 40
                ]
            )
    one, other = answers
    assert one[0] == other[0]  # T=0: a pure function of (seed, prompt)
    assert len(set(one[1:])) > 1
    assert one[1:] != other[1:]
    same = sum(a == b for a, b in zip(one[1:], other[1:], strict=True))
    assert same < 35  # independent draws agree by chance (both right, or the same mistake), not one for one


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"api_key": "sim-key"}, "sim-key"),
        ({"api_key": "sim-key"}, "wrong"),
        ({"rate_429": 1.0, "retry_after_s": 0.25}, None),
        ({"rate_500": 1.0}, None),
        ({"rate_timeout": 1.0, "timeout_hold_s": 0.05}, None),  # held, then hung up on
        ({"rate_timeout": 1.0, "timeout_hold_s": 2.0}, None),  # held past the client's read timeout
        ({"quota_exhausted": True}, None),
    ],
)
def test_the_sim_in_process_answers_a_provider_as_the_http_sim_does(
    start_sim: Callable[..., SimServer], config: dict, key: str | None
) -> None:
    """The in-process sim's fast path (no httpx request machinery) must look the same to the provider code as the
    sim over a socket: keys, statuses, Retry-After, hang-ups and read timeouts alike."""
    sim = SimConfig(error_rate=0.0, malformed_rate=0.0, too_long_rate=0.0, **config)
    messages = hanoi.messages(hanoi.initial_state(3), None)

    def outcome(client: httpx.Client, url: str) -> tuple[str, str, float | None]:
        provider = provider_for("sim", "sim-hanoi", url, key, client)
        try:
            return "answer", provider.complete(messages, temperature=0.0, max_tokens=100).text, None
        except ProviderError as exc:
            return type(exc).__name__, str(exc).replace(url, "URL"), getattr(exc, "retry_after", None)

    server = start_sim(**sim.model_dump())
    with httpx.Client(timeout=0.5) as over_http, inprocess.client(sim, timeout=0.5) as in_process:
        assert outcome(in_process, inprocess.URL) == outcome(over_http, server.url)
