"""Hostile input: whatever a model writes, a parser returns a vote or a red flag, never a crash and never an
invalid state; whatever a user passes as a run id, it never becomes part of a key name unless it is safe.

About 10^5 responses in all: each generated answer is checked with a dozen damaged copies of itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from maker_workers import keys
from maker_workers.celery_app import make_app
from maker_workers.domains import hanoi
from maker_workers.domains.answers import HanoiAnswer, JsonAnswer, RegexAnswer, TextAnswer
from maker_workers.domains.base import Parsed, RedFlag, canonical
from maker_workers.domains.spec import SpecTask, load_spec
from maker_workers.errors import ConfigError
from orchestrator.engine.runner import Runner, VotingConfig
from tests.conftest import ROOT, run_cli

# Decimal digits a tokenizer can produce that are not 0-9; Python's \d and int() take every one of them.
DIGIT_ZEROS = [0x0660, 0x06F0, 0x0966, 0x09E6, 0xFF10, 0x1D7CE]
LEDGER = r"BALANCE:\s*(?P<balance>-?\d+\.\d{2})"
INTEGER_ANSWER = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
SPECS = {path.stem: SpecTask(load_spec(path)) for path in sorted((ROOT / "examples").glob("*.yaml"))}


def outcome(parse: Callable[[], Parsed]) -> Parsed | None:
    """The parser's vote (checked storable and finite), or None for a red flag; anything else fails the test."""
    try:
        parsed = parse()
    except RedFlag as flag:
        assert flag.reason in ("parse", "schema")
        return None
    parsed.key.encode()  # Redis stores it as UTF-8
    canonical(parsed.payload).encode()
    json.dumps(parsed.payload, allow_nan=False)
    return parsed


def red_flag(parse: Callable[[], Parsed]) -> None:
    assert outcome(parse) is None


def foreign_digits(text: str, zero: int) -> str:
    return "".join(chr(zero + int(c)) if c.isascii() and c.isdigit() else c for c in text)


spaces = st.sampled_from(["", " ", "  ", "\t", "\n "])
prose = st.text(alphabet=st.characters(blacklist_characters="[]={}\x00", codec="utf-8"), max_size=30)


@st.composite
def hanoi_answers(draw: st.DrawFn) -> tuple[int, hanoi.Move, hanoi.State, str, str]:
    """(n, move, state, move line, state line) as a model would write them, spacing drawn."""
    n = draw(st.integers(1, 9))
    disks = draw(st.permutations(list(range(1, n + 1))))
    a, b = sorted(draw(st.tuples(st.integers(0, n), st.integers(0, n))))
    state = [disks[:a], disks[a:b], disks[b:]]
    move = draw(st.tuples(st.integers(0, 999_999), st.integers(0, 2), st.integers(0, 2)))
    s = lambda: draw(spaces)  # noqa: E731
    pegs = [f"[{s()}{(',' + s()).join(map(str, peg))}{s()}]" for peg in state]
    return (
        n,
        move,
        state,
        f"move{s()}={s()}[{s()}{move[0]},{s()}{move[1]}{s()},{move[2]}{s()}]",
        f"next_state{s()}={s()}[{pegs[0]},{s()}{pegs[1]},{pegs[2]}{s()}]",
    )


@settings(max_examples=2500)
@given(
    answer=hanoi_answers(),
    before=prose,
    after=prose,
    zero=st.sampled_from(DIGIT_ZEROS),
    digits=st.integers(7, 6000),
    depth=st.sampled_from([2, 3, 100, 10_000]),
    junk=st.sampled_from(["NaN", "Infinity", "-1e3", "2.0", '"1"', "true", "null", "0x1", "1_0"]),
)
def test_the_hanoi_parser_takes_only_a_whole_answer(
    answer: tuple[int, hanoi.Move, hanoi.State, str, str],
    before: str,
    after: str,
    zero: int,
    digits: int,
    depth: int,
    junk: str,
) -> None:
    n, move, state, move_line, state_line = answer
    head = f"{before}\n{move_line}\n"
    tail = f"\n{after}"
    assert hanoi.parse(head + state_line + tail, n) == (move, state)
    # A second, whole answer after the first: the last one counts.
    again = f"{head}{state_line}\nWait:\nmove = [1, 0, 2]\nnext_state = {json.dumps(hanoi.initial_state(n))}"
    assert hanoi.parse(again, n) == ((1, 0, 2), hanoi.initial_state(n))

    huge = str(10**digits + 1) if digits < 4000 else "9" * digits
    pegs = json.dumps(state)
    damaged = [
        head + state_line + "]" + tail,  # unbalanced: one bracket too many
        head + state_line[:-1] + tail,  # unbalanced: the last bracket missing
        head + state_line + f", [{n + 1}]]" + tail,  # the state goes on past its end
        head + state_line + " = 1" + tail,
        head + foreign_digits(state_line, zero) + tail,  # '١', '３': digits no later step reads
        f"{before}\n{foreign_digits(move_line, zero)}\n{state_line}{tail}",
        head + f"next_state = [[{huge}], [], []]" + tail,  # a number past what int() reads
        f"{before}\nmove = [{huge}, 0, 2]\n{state_line}{tail}",
        head + f"next_state = [[{junk}{',' if n else ''}{pegs[2:]}" + tail,  # not an integer where a disk goes
        head + "next_state = " + "[" * depth + pegs + "]" * depth + tail,  # nested past the form
        head + state_line + "\nmove = [1, 0, 2]" + tail,  # a move with no state after it
        f"{before}\n{state_line}\n{move_line}{tail}",  # state before move: not one answer
        head + state_line + "\nmove = [1, 0, 2]\nnext_state = [[1], [1], []]" + tail,  # a broken last answer
        head + state_line.replace("[", "［") + tail,  # lookalike brackets
    ]
    for text in damaged:
        red_flag(lambda text=text: HanoiAnswer().parse(text, hanoi.initial_state(n)))


json_values = (
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
).flatmap(lambda v: st.sampled_from([v, [v], {"x": v}]))
json_prose = st.text(alphabet=st.characters(blacklist_characters='{}"\\', codec="utf-8"), max_size=30)


@settings(max_examples=2000)
@given(
    value=st.integers(-(10**30), 10**30),
    extra=st.dictionaries(st.sampled_from(["why", "steps", "ünïcode", "{}", ""]), json_values, max_size=2),
    indent=st.sampled_from([None, 0, 2]),
    before=json_prose,
    after=json_prose,
    digits=st.integers(4301, 6000),
    depth=st.sampled_from([50, 500, 100_000]),
    constant=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]),
    zero=st.sampled_from(DIGIT_ZEROS),
)
def test_the_json_parser_takes_only_a_whole_object(
    value: int,
    extra: dict,
    indent: int | None,
    before: str,
    after: str,
    digits: int,
    depth: int,
    constant: str,
    zero: int,
) -> None:
    obj = {"answer": value, **extra}
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    plain, strict = JsonAnswer(), JsonAnswer(INTEGER_ANSWER, vote_on=["answer"])
    assert plain.parse(before + text + after, None).payload == obj
    assert strict.parse(before + text + after, None).key == canonical({"answer": value})
    second = {"answer": value + 1}
    assert plain.parse(f"{before}{text} no, {json.dumps(second)}{after}", None).payload == second  # the last counts
    assert plain.parse(f"{before}{text}}}{after}", None).payload == obj  # a stray '}' after it is prose

    answer_at = text.index('"answer"')
    damaged = [
        before + '{"draft": ' + text + after,  # inside an object that never closes
        before + '{"n": ' + "9" * digits + ', "a": ' + text + "}" + after,  # inside one too long to read
        before + text[:answer_at] + '"answer": 0, ' + text[answer_at:] + after,  # the key twice
        before + json.dumps({"answer": 1, "note": "\ud83d"}) + after,  # a lone surrogate (escaped)
        before + '{"answer": ' + constant + "}" + after,
        before + '{"answer": ' + foreign_digits(str(value), zero) + "}" + after,
    ]
    for damage in damaged:
        red_flag(lambda damage=damage: plain.parse(damage, None))
        red_flag(lambda damage=damage: strict.parse(damage, None))
    deep = before + '{"answer": ' + "[" * depth + "1" + "]" * depth + "}" + after
    outcome(lambda: plain.parse(deep, None))  # valid JSON when the decoder can follow it; never a crash
    red_flag(lambda: strict.parse(deep, None))


@settings(max_examples=1500)
@given(
    balances=st.lists(st.decimals(-(10**40), 10**40, places=2, allow_nan=False, allow_infinity=False), min_size=1),
    before=prose,
    zero=st.sampled_from(DIGIT_ZEROS),
)
def test_the_regex_parser_takes_the_last_match_in_ascii_digits(balances: list, before: str, zero: int) -> None:
    parser = RegexAnswer(LEDGER)
    text = before + "".join(f"\nBALANCE: {b}" for b in balances)
    assert outcome(lambda: parser.parse(text, None)) == Parsed(
        canonical({"balance": str(balances[-1])}), {"balance": str(balances[-1])}
    )
    red_flag(lambda: parser.parse(foreign_digits(text, zero), None))
    red_flag(lambda: parser.parse(f"{before}\nBALANCE: NaN", None))
    red_flag(lambda: RegexAnswer(r"Answer: (?P<answer>.+)").parse("Answer: \ud800", None))


# Pieces that trip parsers, put together at random.
TOKENS = [
    "move = ",
    "next_state = ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    '"answer": ',
    '"digit": ',
    '"carry": ',
    '"swap": ',
    '"list": ',
    "BALANCE: ",
    "1",
    "2",
    "3",
    "-7",
    ".05",
    "١",
    "３",
    "NaN",
    "Infinity",
    "9" * 40,
    "9" * 5000,
    '"\\ud800"',
    "\ud800",
    "\n",
    " ",
    "```json\n",
    "null",
    '"x"',
]


@settings(max_examples=3000)
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=40).map("".join))
def test_no_response_crashes_a_parser_or_builds_a_bad_state(text: str) -> None:
    for parser in (HanoiAnswer(), JsonAnswer(), JsonAnswer(INTEGER_ANSWER, vote_on=["answer"]), RegexAnswer(LEDGER)):
        outcome(lambda parser=parser: parser.parse(text, None))
    parsed = outcome(lambda: TextAnswer().parse(text, None))
    assert parsed is None or parsed.payload == " ".join(text.split()).casefold()
    hanoi_vote = outcome(lambda: HanoiAnswer().parse(text, hanoi.initial_state(3)))
    if hanoi_vote is not None:
        assert sorted(d for peg in hanoi_vote.payload["next_state"] for d in peg) == [1, 2, 3]
    for task in SPECS.values():
        state = task.initial_state()
        vote = outcome(lambda task=task, state=state: task.parse(text, state))
        if vote is not None:  # whatever passed the red flags builds a next state that is JSON
            json.dumps(task.next_state(state, 0, None, vote.payload), allow_nan=False)


# --- run ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["3f2a9c0b1d2e", "nightly-2025.06_01", "a", "x" * 64])
def test_a_plain_run_id_is_taken(run_id: str) -> None:
    assert keys.check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "a{b", "b}", "a:b", "two words", "x" * 65, "*", "r?", "[r]", "r\n", "é"])
def test_a_run_id_that_would_break_a_key_is_refused(run_id: str) -> None:
    with pytest.raises(ConfigError, match="is not valid"):
        keys.check_run_id(run_id)


@given(st.text(max_size=80))
def test_a_taken_run_id_is_exactly_the_hash_tag_of_its_keys(run_id: str) -> None:
    try:
        keys.check_run_id(run_id)
    except ConfigError:
        return
    meta = keys.meta(run_id)
    assert meta.count("{") == meta.count("}") == 1 and meta[meta.index("{") + 1 : meta.index("}")] == run_id
    assert keys.step_status_pattern(run_id).count("*") == 1  # the glob matches this run's contests only


def test_a_runner_refuses_a_bad_run_id_before_touching_redis() -> None:
    client = redis.Redis(port=1)  # nothing listens there: any command would fail differently
    with pytest.raises(ConfigError, match="is not valid"):
        Runner(client, make_app("redis://127.0.0.1:1/0"), VotingConfig(), hanoi.HanoiTask(3), run_id="a}b")


def test_resume_refuses_a_bad_run_id_before_anything_starts(tmp_path: Path) -> None:
    result = run_cli("hanoi", "--disks", "2", "--redis-url", "redis://127.0.0.1:1/0", "--resume", "x:{y}", timeout=60)
    assert result.returncode == 2
    assert "is not valid" in result.stderr and "Traceback" not in result.stderr
