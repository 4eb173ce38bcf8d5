"""The simulated model's oracles, driven through the example specs in `examples/`.

Prompts are rendered and answers parsed by the spec engine itself (`SpecTask`), as a run does it, so the
examples and the simulator are checked against the format the workers enforce.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from maker_workers.domains import answers
from maker_workers.domains.base import RedFlag
from maker_workers.domains.spec import SpecTask, spec_from_data
from maker_workers.simllm.model import SimConfig, SimModel, count_tokens
from maker_workers.simllm.oracles import arithmetic, read_prompt
from maker_workers.simllm.server import SimServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXACT = SimConfig(error_rate=0.0, malformed_rate=0.0, too_long_rate=0.0)
ARITHMETIC = {
    "name": "arithmetic",
    "initial_state": "12 * (3 + 4) - -5",
    "done": {"steps": 1},
    "prompt": 'Compute: {{ state }}\nEnd with the JSON object {"answer": <integer>} on a line of its own.',
    "answer": {
        "format": "json",
        "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]},
    },
}


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


_TASKS: dict[str, SpecTask] = {}


def task_of(spec: dict[str, Any]) -> SpecTask:
    """The spec as the engine runs it (sandboxed templates, strict parsers), built once per example."""
    if spec["name"] not in _TASKS:
        _TASKS[spec["name"]] = SpecTask(spec_from_data(spec))
    return _TASKS[spec["name"]]


def parse(spec: dict[str, Any], text: str) -> Any:
    """The answer payload, strictly: a RedFlag for anything a spec task discards."""
    return task_of(spec).parse(text, None).payload


def prompt_of(spec: dict[str, Any], state: Any, step: int = 0, previous: Any = None) -> str:
    return task_of(spec).messages(state, step, previous)[-1]["content"]


def drive(spec: dict[str, Any], model: SimModel, max_steps: int = 1000) -> list[Any]:
    """The states from initial_state until done (or `max_steps`), one committed answer a step, as a spec run goes."""
    task = task_of(spec)
    states, previous = [task.initial_state()], None
    while not task.done(states[-1], len(states) - 1) and len(states) <= max_steps:
        state, step = states[-1], len(states) - 1
        assert task.messages(state, step, previous)[0]["content"].strip()  # the system message
        answer = parse(spec, model.answer(prompt_of(spec, state, step, previous), 0.0, 750).text)
        states.append(task.next_state(state, step, previous, answer))
        previous = answer
    return states


def finished(spec: dict[str, Any]) -> list[Any]:
    states = drive(spec, SimModel(EXACT))
    assert task_of(spec).done(states[-1], len(states) - 1), "the example did not finish in 1000 steps"
    return states


def inversions(values: list[int]) -> int:
    return sum(a > b for i, a in enumerate(values) for b in values[i + 1 :])


def case(name: str) -> tuple[dict[str, Any], str]:
    """A spec and one of its prompts a few steps in (a carry, a later swap, a moved balance)."""
    if name == "arithmetic":
        return ARITHMETIC, prompt_of(ARITHMETIC, "12 * (3 + 4) - -5")
    spec = example(name)
    states = drive(spec, SimModel(EXACT), max_steps=5)
    return spec, prompt_of(spec, states[5], 5)


NAMES = ["multiply", "sort", "ledger", "arithmetic"]


# --- whole examples at error rate 0 ---------------------------------------------------------------


def test_the_multiply_example_ends_with_a_times_b() -> None:
    spec = example("multiply")
    states = finished(spec)
    a, b = int(spec["initial_state"]["a"]), spec["initial_state"]["b"]
    assert states[-1]["out"].lstrip("0") == str(a * b)
    assert len(states) - 1 == len(str(a * b))  # one digit of the product a step


def test_the_sort_example_sorts_in_as_many_steps_as_the_list_has_inversions() -> None:
    spec = example("sort")
    states = finished(spec)
    assert states[-1] == sorted(spec["initial_state"])
    assert len(states) - 1 == inversions(spec["initial_state"]) > 100


def test_the_ledger_example_ends_on_the_exact_decimal_sum() -> None:
    spec = example("ledger")
    start = spec["initial_state"]
    states = finished(spec)
    assert len(states) - 1 == len(start["entries"]) == spec["done"]["steps"]
    assert Decimal(states[-1]["balance"]) == Decimal(start["balance"]) + sum(Decimal(e) for e in start["entries"])
    assert any(state["balance"].startswith("-") for state in states)  # the pattern's minus sign is used


@pytest.mark.parametrize(
    ("prompt", "right", "mistake"),
    [
        ("Digit: 7\nMultiplier: 987\nCarry in: 12", (1, 692), (9, 690)),  # the carry in forgotten
        ("Digit: 7\nMultiplier: 987\nCarry in: 0", (9, 690), (9, 691)),  # no carry in: the carry out one high
        ("Current list: [1, 5, 2, 9, 3]", (1, [1, 2, 5, 9, 3]), (3, [1, 5, 2, 3, 9])),  # the second inversion
        ("Current list: [1, 2, 4, 3]", (2, [1, 2, 3, 4]), (0, [2, 1, 4, 3])),  # one inversion: the first sorted pair
        ("Balance: 10.00\nEntry: -12.35", Decimal("-2.35"), Decimal("22.35")),  # the sign flipped
        ("Compute: 2 * (3 - 10)", -14, -13),
    ],
)
def test_an_oracle_knows_the_right_answer_and_the_usual_mistake(prompt: str, right: Any, mistake: Any) -> None:
    problem = read_prompt(prompt)
    assert problem.right(random.Random(0)) == right
    assert problem.mistake() == mistake


# --- the error mix, the same for every oracle ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_wrong_answers_are_mostly_the_steps_plausible_mistake(name: str) -> None:
    spec, prompt = case(name)
    problem = read_prompt(prompt)
    right = problem.right(random.Random(0))
    expected = {
        "right": parse(spec, problem.render(right)),
        "mistake": parse(spec, problem.render(problem.mistake())),
        "corrupt": parse(spec, problem.render(problem.corrupt(right))),
    }
    assert len({json.dumps(v, sort_keys=True) for v in expected.values()}) == 3
    model = SimModel(SimConfig(error_rate=0.4, malformed_rate=0.0, too_long_rate=0.0, seed=5))
    answers = [parse(spec, model.answer(prompt, 0.1, 750).text) for _ in range(3000)]
    wrong = [a for a in answers if a != expected["right"]]
    assert len(wrong) / len(answers) == pytest.approx(0.4, abs=4 * math.sqrt(0.24 / 3000))
    assert wrong.count(expected["mistake"]) / len(wrong) == pytest.approx(0.8, abs=0.05)
    assert wrong.count(expected["corrupt"]) / len(wrong) == pytest.approx(0.1, abs=0.04)
    others = Counter(
        json.dumps(a, sort_keys=True) for a in wrong if a not in (expected["mistake"], expected["corrupt"])
    )
    assert len(others) > 3  # the rest are spread out: they rarely collide


@pytest.mark.parametrize("name", NAMES)
def test_malformed_answers_fail_strict_parsing(name: str) -> None:
    spec, prompt = case(name)
    model = SimModel(SimConfig(error_rate=0.2, malformed_rate=0.999, too_long_rate=0.0, seed=2))
    texts = {model.answer(prompt, 0.1, 750).text for _ in range(200)}
    assert len(texts) >= 4  # every kind of breakage shows up
    for text in texts:
        with pytest.raises(RedFlag):
            parse(spec, text)


@pytest.mark.parametrize("name", NAMES)
def test_too_long_answers_run_past_750_tokens_and_are_cut_at_max_tokens(name: str) -> None:
    spec, prompt = case(name)
    model = SimModel(SimConfig(error_rate=0.0, malformed_rate=0.0, too_long_rate=0.999, seed=4))
    right = parse(spec, SimModel(EXACT).answer(prompt, 0.0, None).text)
    for _ in range(20):
        answer = model.answer(prompt, 0.1, None)
        assert count_tokens(answer.text) > 750 and not answer.truncated
        assert parse(spec, answer.text) == right  # only its length makes it a red flag
    cut = model.answer(prompt, 0.1, 750)
    assert cut.truncated and cut.output_tokens == 750


@pytest.mark.parametrize("name", NAMES)
def test_temperature_zero_is_a_function_of_seed_and_prompt(name: str) -> None:
    _, prompt = case(name)
    noisy = {"error_rate": 0.45, "malformed_rate": 0.2, "too_long_rate": 0.1}
    model = SimModel(SimConfig(seed=1, **noisy))
    first = model.answer(prompt, 0.0, None).text
    model.answer(prompt, 0.7, None)  # warm draws move the server's generator, never a T = 0 answer
    assert {model.answer(prompt, 0.0, None).text for _ in range(5)} == {first}
    assert SimModel(SimConfig(seed=1, **noisy)).answer(prompt, 0.0, None).text == first
    by_seed = {SimModel(SimConfig(seed=seed, **noisy)).answer(prompt, 0.0, None).text for seed in range(30)}
    assert len(by_seed) > 1
    assert len({model.answer(prompt, 0.7, None).text for _ in range(30)}) > 1


# --- arithmetic: one-off votes --------------------------------------------------------------------


def test_arithmetic_answers_parse_as_json_regex_and_text() -> None:
    text = SimModel(EXACT).answer("Compute: 12 * (3 + 4) - -5", 0.0, None).text
    assert answers.last_json_object(text) == {"answer": 89}
    assert re.findall(r'"answer":\s*(?P<answer>-?\d+)', text)[-1] == "89"
    assert text.strip().splitlines()[-1] == '{"answer": 89}'


@pytest.mark.parametrize(
    "expression", ["2 ** 8", "7 / 2", "7 // 2", "x + 1", "__import__('os').getpid()", "1 +", "1.5"]
)
def test_arithmetic_refuses_anything_but_integers_plus_minus_times(expression: str) -> None:
    with pytest.raises(ValueError):
        arithmetic.evaluate(expression)


_EXPRESSIONS = st.recursive(
    st.integers(-1000, 1000).map(str),
    lambda inner: st.tuples(inner, st.sampled_from("+-*"), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    max_leaves=12,
)


@given(_EXPRESSIONS)
def test_arithmetic_agrees_with_python(expression: str) -> None:
    assert arithmetic.evaluate(expression) == eval(expression)  # generated text of ints, + - * and parentheses only


# --- over HTTP --------------------------------------------------------------------------------------


def post(http: httpx.Client, url: str, *messages: dict[str, str]) -> httpx.Response:
    return http.post(f"{url}/chat/completions", json={"model": "sim", "messages": list(messages), "temperature": 0})


def test_an_example_step_is_answered_over_http(sim_server: SimServer, http: httpx.Client) -> None:
    spec = example("sort")
    state = spec["initial_state"]
    response = post(
        http,
        sim_server.url,
        *task_of(spec).messages(state, 0, None),
    )
    response.raise_for_status()
    payload = parse(spec, response.json()["choices"][0]["message"]["content"])
    assert payload["swap"] == [1, 2] and payload["list"][:3] == [23, 1, 68]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("What is the capital of France?", "no oracle recognises this prompt"),
        ("Current list: [1, 2, 3]", "already sorted"),
        ("Compute: __import__('os').getpid()", "only integers"),
    ],
)
def test_a_prompt_without_an_answer_gets_a_clear_400(
    sim_server: SimServer, http: httpx.Client, prompt: str, message: str
) -> None:
    response = post(http, sim_server.url, {"role": "user", "content": prompt})
    assert response.status_code == 400
    text = response.json()["error"]["message"]
    assert "cannot answer" in text and message in text
