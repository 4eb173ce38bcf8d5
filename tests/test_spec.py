"""Spec tasks: a bad spec is one clear error naming its field, templates stay in the sandbox, a good spec runs."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from maker_workers.domains import hanoi
from maker_workers.domains.base import RedFlag
from maker_workers.domains.spec import SpecError, SpecTask, TaskSpec, load_spec, parser_for, spec_from_data
from tests.conftest import run_cli

COUNTDOWN: dict[str, Any] = {
    "name": "countdown",
    "initial_state": {"n": 3},
    "system": "You count down by one.",
    "prompt": "The number is {{ state.n }}.{% if previous %} Last answer: {{ previous.n }}.{% endif %} "
    'Reply with {"n": <the number minus one>}.',
    "answer": {
        "format": "json",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "vote_on": ["n"],
    },
    "done": {"when": "state.n == 0", "max_steps": 10},
}


def countdown(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(COUNTDOWN)
    data.update(changes)
    return data


def with_answer(**changes: Any) -> dict[str, Any]:
    data = countdown()
    data["answer"] = changes
    return data


def run(task: SpecTask, reply: Any) -> tuple[Any, int]:
    """Drive a task as the engine would, with `reply(messages, state)` standing in for the winning sample."""
    state, step, previous = task.initial_state(), 0, None
    while not task.done(state, step):
        assert step < 100, "the task never finished"
        parsed = task.parse(reply(task.messages(state, step, previous), state), state)
        state = task.next_state(state, step, previous, parsed.payload)
        previous = parsed.payload
        step += 1
    return state, step


# --- bad specs ------------------------------------------------------------------------------------

BAD_SPECS = [
    (with_answer(format="xml"), "answer.format: unknown format 'xml'; use one of json, regex, text, hanoi"),
    (countdown(prompt="a\nb\n{{ state.n }"), "prompt: template syntax error on line 3: unexpected '}'"),
    (countdown(system="{% if %}"), "system: template syntax error on line 1"),
    (countdown(prompt="{{ stat.n }}"), "prompt: undefined variable at first render: 'stat' is undefined"),
    (countdown(prompt="{{ previous.n }}"), "prompt: undefined variable at first render"),
    (with_answer(format="json", schema={"type": "integer-ish"}), "answer.schema: not a JSON Schema"),
    (with_answer(format="json", schema=[1]), "answer.schema: not a JSON Schema"),
    (with_answer(format="regex"), "answer.pattern: required when answer.format is regex"),
    (with_answer(format="regex", pattern=r"(\d+)"), "answer.pattern: the pattern has no named group"),
    (with_answer(format="regex", pattern="(?P<n>"), "answer.pattern: not a valid regular expression"),
    (with_answer(format="regex", pattern=r"(?P<n>\d+)", vote_on=["m"]), "answer.vote_on: 'm' is not a named group"),
    (with_answer(format="json", pattern=r"(?P<n>\d+)"), "answer.pattern: only applies when answer.format is regex"),
    (with_answer(format="text", schema={}), "answer.schema: only applies when answer.format is json"),
    (with_answer(format="json", normalize=True), "answer.normalize: only applies when answer.format is text"),
    (with_answer(format="text", vote_on=["n"]), "answer.vote_on: only applies when answer.format is json or regex"),
    (with_answer(format="text", normalize=["trim"]), "answer.normalize: unknown step 'trim'"),
    (with_answer(format="json", vote_on=[]), "answer.vote_on:"),
    (with_answer(format="json", fromat="json"), "answer.fromat: unknown field"),
    (countdown(promt="x"), "promt: unknown field (a typo?); the fields here are name, initial_state"),
    (countdown(done={"steps": 3, "when": "true"}), "done: give exactly one of 'steps: N' or 'when: EXPRESSION'"),
    (countdown(done={}), "done: give one of 'steps: N'"),
    (countdown(done={"steps": 0}), "done.steps:"),
    (countdown(done={"steps": 2, "max_steps": 5}), "done.max_steps: only applies with done.when"),
    (countdown(done={"when": "state.n =="}), "done.when: expression syntax error"),
    (countdown(done={"when": "state.m == 0"}), "done.when: undefined variable at first render"),
    (countdown(next_state="{{ answer | tojson }"), "next_state: template syntax error"),
    (countdown(k=0), "k: Input should be greater than or equal to 1"),
    (countdown(k="3"), "k: Input should be a valid integer"),
    (countdown(max_samples=0), "max_samples:"),
    (countdown(max_red_flags=-1), "max_red_flags:"),
    (countdown(max_errors=1.5), "max_errors:"),
    (countdown(max_output_tokens=0), "max_output_tokens:"),
    (countdown(temperature={"first": 2.5}), "temperature.first:"),
    (countdown(temperature={"later": -0.1}), "temperature.later:"),
    (countdown(temperature={"frist": 0.0}), "temperature.frist: unknown field"),
    (countdown(initial_state=float("nan")), "initial_state: not a JSON value"),
    (countdown(initial_state={1: "one"}), "initial_state: not a JSON value"),
    (countdown(name=""), "name:"),
    ({k: v for k, v in COUNTDOWN.items() if k != "prompt"}, "prompt: required field is missing"),
    ({k: v for k, v in COUNTDOWN.items() if k != "initial_state"}, "initial_state: required field is missing"),
]


@pytest.mark.parametrize(
    ("data", "message"), BAD_SPECS, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m) in enumerate(BAD_SPECS)]
)
def test_a_bad_spec_is_one_error_starting_with_its_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_data(data)
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("field", "source"),
    [
        ("prompt", "{{ state.__class__ }}"),
        ("prompt", "{{ ''.__class__.__mro__ }}"),
        ("prompt", "{{ state.items.__globals__ }}"),
        ("prompt", "{{ state['__class__'] }}"),
        ("prompt", "{{ state.items['__globals__'] }}"),
        ("prompt", "{{ cycler.__init__.__globals__ }}"),
        ("prompt", "{{ (1).__class__.__subclasses__() }}"),
        ("system", "{% for x in state.__class__.__mro__ %}{{ x }}{% endfor %}"),
        ("prompt", "{{ state.update({'n': 0}) }}"),
        ("done.when", "state.__class__.__name__ == 'dict'"),
    ],
)
def test_the_sandbox_refuses_to_reach_outside_with_a_clear_error(field: str, source: str) -> None:
    data = countdown()
    if field == "done.when":
        data["done"] = {"when": source}
    else:
        data[field] = source
    with pytest.raises(SpecError, match=rf"^{field}: the (template|expression) tries to reach outside the sandbox \("):
        spec_from_data(data)


def test_a_spec_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(SpecError, match="spec: must be a mapping of fields"):
        spec_from_data(["name", "prompt"])  # type: ignore[arg-type]


# --- files ----------------------------------------------------------------------------------------


def test_a_yaml_spec_and_a_json_spec_load_the_same(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(COUNTDOWN))
    (tmp_path / "a.json").write_text(json.dumps(COUNTDOWN))
    (tmp_path / "a.spec").write_text(json.dumps(COUNTDOWN))  # unknown suffix: YAML, which reads JSON too
    specs = [load_spec(tmp_path / name) for name in ("a.yaml", "a.json", "a.spec")]
    assert specs[0] == specs[1] == specs[2] == TaskSpec.model_validate(COUNTDOWN)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.yaml", "name: x\nprompt: [unclosed\n", "YAML syntax error on line 3"),
        ("bad.json", '{"name": "x",\n "prompt": }', "JSON syntax error on line 2"),
        ("bad.json", '{"initial_state": NaN}', "NaN is not JSON"),
        (
            "list.yaml",
            "- name\n- prompt\n",
            "a spec must be a mapping of fields (name, prompt, answer, ...), got a list",
        ),
        ("empty.yaml", "", "got nothing (the file is empty)"),
        ("typo.yaml", yaml.safe_dump(countdown(promt="x")), "promt: unknown field"),
    ],
)
def test_a_bad_file_names_itself_and_the_problem(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nowhere.yaml")


# --- runtime --------------------------------------------------------------------------------------


def test_a_variable_undefined_only_later_names_the_field_and_step() -> None:
    task = SpecTask(
        spec_from_data(
            countdown(prompt="Hint: {{ state.hints[step] }}", initial_state={"hints": ["a"]}, done={"steps": 9})
        )
    )
    assert task.messages({"hints": ["a"]}, 0, None)[-1]["content"] == "Hint: a"
    with pytest.raises(SpecError, match=r"^prompt: undefined variable at step 5: "):
        task.messages({"hints": ["a"]}, 5, None)


def test_a_next_state_that_is_not_json_names_the_field_and_step() -> None:
    task = SpecTask(spec_from_data(countdown(next_state="n is {{ answer.n }}")))
    with pytest.raises(SpecError, match=r"^next_state: the output at step 2 is not JSON .*tojson"):
        task.next_state({"n": 3}, 2, None, {"n": 2})


def test_a_done_expression_failing_later_names_the_field_and_step() -> None:
    task = SpecTask(spec_from_data(countdown(done={"when": "state.n == 0"})))
    with pytest.raises(SpecError, match=r"^done\.when: undefined variable at step 4: "):
        task.done({"m": 1}, 4)


def test_tojson_gives_exact_json_not_html_escaped() -> None:
    tricky = {"s": "<a href='x'>&</a> \u00e9\u4e2d", "b": 1}
    task = SpecTask(spec_from_data(countdown(initial_state=tricky, prompt="{{ state | tojson }}", done={"steps": 1})))
    assert task.messages(tricky, 0, None)[-1]["content"] == json.dumps(tricky, ensure_ascii=False)
    assert task.next_state(tricky, 0, None, tricky) == tricky


def test_a_literal_task_takes_its_prompt_as_text() -> None:
    data = countdown(prompt="Fill in {{ name }} and {% raw", system="{{ sys }}", done={"steps": 1})
    with pytest.raises(SpecError):
        spec_from_data(data)
    task = SpecTask(spec_from_data(data, literal=True), literal=True)
    assert task.messages(None, 0, None) == [
        {"role": "system", "content": "{{ sys }}"},
        {"role": "user", "content": "Fill in {{ name }} and {% raw"},
    ]
    assert SpecTask.from_definition(task.definition()).messages(None, 0, None) == task.messages(None, 0, None)


def test_without_a_system_template_there_is_only_the_user_message() -> None:
    data = countdown()
    del data["system"]
    messages = SpecTask(spec_from_data(data)).messages({"n": 3}, 0, None)
    assert [m["role"] for m in messages] == ["user"]


@pytest.mark.parametrize("initial_state", [{"n": 3}, None, [1, "two"], "text", 0])
def test_a_definition_round_trips_to_the_same_task(initial_state: Any) -> None:
    data = countdown(initial_state=initial_state, prompt="{{ state | tojson }}", done={"steps": 4}, k=3)
    data["answer"]["schema"]["properties"]["n"]["default"] = None  # a null inside the schema is kept
    task = SpecTask(spec_from_data(data))
    definition = json.loads(json.dumps(task.definition()))
    again = SpecTask.from_definition(definition)
    assert definition["kind"] == "spec"
    assert again.spec == task.spec
    assert again.initial_state() == initial_state
    assert again.total_steps() == 4


def test_a_definition_of_another_kind_is_refused() -> None:
    with pytest.raises(SpecError, match="not a spec task definition"):
        SpecTask.from_definition({"kind": "hanoi", "n": 3})


def test_the_input_hash_names_state_step_and_previous() -> None:
    task = SpecTask(spec_from_data(countdown()))
    hashes = {
        task.input_hash({"n": 3}, 0, None),
        task.input_hash({"n": 2}, 0, None),
        task.input_hash({"n": 3}, 1, None),
        task.input_hash({"n": 3}, 0, {"n": 3}),
    }
    assert len(hashes) == 4
    assert task.input_hash({"n": 3}, 0, None) == SpecTask(spec_from_data(countdown())).input_hash({"n": 3}, 0, None)


def test_parser_for_builds_a_one_off_parser() -> None:
    spec = spec_from_data(with_answer(format="regex", pattern=r"Answer: (?P<answer>\w+)"))
    assert parser_for(spec.answer).parse("Answer: a\nAnswer: b", None).payload == {"answer": "b"}


# --- end to end -----------------------------------------------------------------------------------


def count_down_reply(messages: list[dict[str, str]], state: Any) -> str:
    n = int(messages[-1]["content"].split("The number is ")[1].split(".")[0])
    return f'Let me think: {n} - 1 = {n - 1}.\n```json\n{{"n": {n - 1}}}\n```'


def test_a_countdown_spec_reaches_zero_in_as_many_steps_as_it_started_from() -> None:
    task = SpecTask(spec_from_data(countdown(initial_state={"n": 5})))
    assert task.total_steps() is None
    assert task.max_steps == 10
    assert run(task, count_down_reply) == ({"n": 0}, 5)


def test_a_countdown_spec_with_a_regex_answer_and_a_next_state_template_reaches_zero() -> None:
    data = countdown(
        initial_state={"n": 4, "trail": []},
        answer={"format": "regex", "pattern": r"\{\"n\": (?P<n>-?\d+)\}"},
        next_state='{"n": {{ answer.n | int }}, "trail": {{ (state.trail + [state.n]) | tojson }}}',
        done={"steps": 4},
    )
    task = SpecTask(spec_from_data(data))
    assert task.total_steps() == 4
    assert run(task, count_down_reply) == ({"n": 0, "trail": [4, 3, 2, 1]}, 4)


def test_a_wrong_reply_is_a_red_flag_not_a_step() -> None:
    task = SpecTask(spec_from_data(countdown()))
    with pytest.raises(RedFlag) as caught:
        task.parse('{"n": "two"}', {"n": 3})
    assert caught.value.reason == "schema"


def test_a_hanoi_spec_solves_three_disks_with_the_optimal_moves() -> None:
    data = {
        "name": "hanoi-3",
        "initial_state": hanoi.initial_state(3),
        "prompt": "Previous move: {{ previous.move | tojson if previous else 'none' }}\n"
        "Current state: {{ state | tojson }}",
        "answer": {"format": "hanoi"},
        "next_state": "{{ answer.next_state | tojson }}",
        "done": {"when": "state[2] | length == 3", "max_steps": 20},
    }
    moves = iter(hanoi.optimal_moves(3))

    def reply(messages: list[dict[str, str]], state: Any) -> str:
        prompt_state, _ = hanoi.read_prompt(messages[-1]["content"])
        assert prompt_state == state
        move = next(moves)
        after = hanoi.apply_move(state, move)
        return f"move = {hanoi.format_move(move)}\nnext_state = {hanoi.format_state(after)}"

    assert run(SpecTask(spec_from_data(data)), reply) == (hanoi.goal_state(3), 7)


def test_a_regex_pattern_spanning_lines_needs_whole_line_false() -> None:
    spec = {"name": "t", "initial_state": 0, "prompt": "p", "done": {"steps": 1}}
    with pytest.raises(SpecError, match=r"answer.pattern: spans lines .*whole_line: false"):
        spec_from_data(spec | {"answer": {"format": "regex", "pattern": r"FINAL\n(?P<n>\d+)"}})
    spec_from_data(spec | {"answer": {"format": "regex", "pattern": r"FINAL\n(?P<n>\d+)", "whole_line": False}})


@pytest.mark.parametrize(
    ("prompt", "why"),
    [
        ('{{ "x" * 50000000 }}', "'* 50000000' would build 50,000,000 items"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "over 100,000 iteration"),
        ('{% set s = "xxxxxxxxxx" %}' + "{% set s = s ~ s %}" * 25 + "{{ s }}", "a concatenation would build"),
        ('{{ "x" | center(1000000000) }}', "|center(1000000000)"),
        ("{{ 10 ** 100000000 }}", "an exponent over 1,000"),
        ("{% for i in range(3) %}{{ state.text }}\n{% endfor %}", "would build 300,003 characters"),
    ],
)
def test_a_template_that_builds_too_much_or_loops_too_long_is_refused_at_once(prompt: str, why: str) -> None:
    spec = {"name": "t", "initial_state": {"text": "x" * 100_000}, "answer": {"format": "json"}, "done": {"steps": 1}}
    started = time.monotonic()
    with pytest.raises(SpecError, match=r"^prompt: the template does too much at first render") as refused:
        SpecTask(spec_from_data(spec | {"prompt": prompt}))
    assert why in str(refused.value) and time.monotonic() - started < 2


def test_a_template_within_the_bounds_renders_as_before() -> None:
    spec = {"name": "t", "initial_state": {"n": 3}, "answer": {"format": "json"}, "done": {"steps": 1}}
    prompt = "{% for i in range(state.n) %}{{ i }}{% endfor %} {{ 'ab' * 3 }} {{ 'a' ~ 'b' }} {{ 'x' | center(5) }}"
    task = SpecTask(spec_from_data(spec | {"prompt": prompt}))
    assert task.messages({"n": 3}, 0, None)[-1]["content"] == "012 ababab ab   x  "


def test_maker_run_refuses_a_huge_or_endless_template_before_anything_starts(tmp_path: Path) -> None:
    for name, prompt in (
        ("huge", '{{ "x" * 50000000 }}'),
        ("endless", "{% for i in range(99999) %}" * 3 + "{% endfor %}" * 3),
    ):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(
            json.dumps(
                {"name": name, "initial_state": 0, "prompt": prompt, "answer": {"format": "json"}, "done": {"steps": 1}}
            )
        )
        started = time.monotonic()
        done = run_cli("run", str(spec), "--json")
        assert done.returncode == 2 and "the template does too much" in done.stderr, done.stderr
        assert "embedded cluster up" not in done.stderr and time.monotonic() - started < 10  # nothing sent
