"""The simulated LLM over real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from maker_workers.domains import hanoi
from maker_workers.simllm.server import SimServer
from tests.conftest import run_cli


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
    from maker_workers.simllm.model import SimConfig

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
    from maker_workers.simllm.model import SimConfig

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
