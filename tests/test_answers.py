"""The answer parsers: the last answer counts, nothing is repaired, formatting never splits votes."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from maker_workers.domains import hanoi
from maker_workers.domains.answers import (
    HanoiAnswer,
    JsonAnswer,
    RegexAnswer,
    TextAnswer,
    compile_pattern,
    key_of,
    last_json_object,
    normalize_steps,
    schema_validator,
)
from maker_workers.domains.base import RedFlag, canonical

# Strings full of the characters a naive scanner trips on: braces, quotes, backslashes, backticks.
tricky_text = st.text(alphabet=st.sampled_from(list('{}[]"\\`:, \nab\u00e9\u4e2d')), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(tricky_text, json_values, max_size=5)
# Prose without '{', so it cannot hold an object of its own.
prose = st.text(alphabet=st.sampled_from(list("abc xyz.,:;!?()[]\n`\"'}")), max_size=30)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def fenced(text: str) -> str:
    return f"```json\n{text}\n```"


# --- json -----------------------------------------------------------------------------------------


@given(
    earlier=st.lists(st.tuples(prose, json_objects, st.booleans()), max_size=3),
    last=json_objects,
    indent=st.sampled_from([None, 0, 2, 4]),
    fence=st.booleans(),
    before=prose,
    after=prose,
)
def test_json_answer_is_the_last_object_whatever_surrounds_it(
    earlier: list[tuple[str, dict[str, Any], bool]],
    last: dict[str, Any],
    indent: int | None,
    fence: bool,
    before: str,
    after: str,
) -> None:
    parts = [text + (fenced(json.dumps(obj)) if in_fence else json.dumps(obj)) for text, obj, in_fence in earlier]
    final = json.dumps(last, indent=indent, ensure_ascii=False)
    response = "".join(parts) + before + (fenced(final) if fence else final) + after
    assert JsonAnswer().parse(response, None).payload == last


def test_json_answer_ignores_braces_inside_strings() -> None:
    response = 'Draft: {"a": "}{ not the end"} then {"b": "x{\\"c\\": 1}y", "d": {"e": "}"}} done.'
    assert last_json_object(response) == {"b": 'x{"c": 1}y', "d": {"e": "}"}}


def test_json_answer_skips_braces_that_are_not_json_after_the_last_object() -> None:
    assert last_json_object('{"a": 1} and then {not json} or {"unterminated": ') == {"a": 1}


def test_json_answer_without_an_object_is_a_parse_red_flag() -> None:
    with pytest.raises(RedFlag) as caught:
        JsonAnswer().parse('The answer is [1, 2] or "x", never an object.', None)
    assert caught.value.reason == "parse"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_json_answer_with_a_non_finite_number_is_a_parse_red_flag(constant: str) -> None:
    with pytest.raises(RedFlag) as caught:
        JsonAnswer().parse(f'{{"ok": 1}} {{"x": {constant}}}', None)
    assert caught.value.reason == "parse"


def test_json_answer_failing_its_schema_is_a_schema_red_flag() -> None:
    parser = JsonAnswer({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    assert parser.parse('{"n": 3}', None).payload == {"n": 3}
    with pytest.raises(RedFlag) as caught:
        parser.parse('{"n": "3"}', None)
    assert caught.value.reason == "schema"
    assert "$.n" in caught.value.detail


def test_json_answer_missing_a_vote_on_field_is_a_schema_red_flag() -> None:
    with pytest.raises(RedFlag) as caught:
        JsonAnswer(vote_on=["move"]).parse('{"mvoe": 1}', None)
    assert caught.value.reason == "schema"


def test_json_answer_votes_on_the_vote_on_fields_but_hands_on_the_whole_object() -> None:
    parser = JsonAnswer(vote_on=["answer"])
    one = parser.parse('{"answer": 7, "reasoning": "because"}', None)
    two = parser.parse('{"reasoning": "other words", "answer": 7}', None)
    assert one.key == two.key == '{"answer":7}'
    assert one.payload == {"answer": 7, "reasoning": "because"}


@given(value=json_objects, seed=st.integers(), indent=st.sampled_from([None, 1, 4]), fence=st.booleans())
def test_equal_json_answers_written_differently_have_one_key(
    value: dict[str, Any], seed: int, indent: int | None, fence: bool
) -> None:
    other = json.dumps(shuffled(value, random.Random(seed)), indent=indent, separators=(", ", " : "))
    assert (
        JsonAnswer().parse(json.dumps(value), None).key
        == JsonAnswer().parse(fenced(other) if fence else other, None).key
    )


@given(one=json_objects, two=json_objects)
def test_different_json_answers_are_two_candidates(one: dict[str, Any], two: dict[str, Any]) -> None:
    # "different" as JSON text tells it: 1 and 1.0, or 1 and true, are different answers, though Python's == is True.
    assume(canonical(one) != canonical(two))
    assert JsonAnswer().parse(json.dumps(one), None).key != JsonAnswer().parse(json.dumps(two), None).key


# --- regex ----------------------------------------------------------------------------------------


@given(numbers=st.lists(st.integers(), min_size=1, max_size=6), tail=prose)
def test_regex_answer_is_the_last_match(numbers: list[int], tail: str) -> None:
    response = "".join(f"I think...\n  Answer: {n} \n" for n in numbers) + tail.replace("Answer", "")
    parsed = RegexAnswer(r"Answer:\s*(?P<answer>-?\d+)").parse(response, None)
    assert parsed.payload == {"answer": str(numbers[-1])}
    assert parsed.key == canonical({"answer": str(numbers[-1])})


def test_regex_answer_gives_none_for_an_unmatched_optional_group() -> None:
    parser = RegexAnswer(r"move (?P<disk>\d+)(?: to (?P<peg>\d+))?")
    assert parser.parse("move 3 to 1\nno:\nmove 2", None).payload == {"disk": "2", "peg": None}


def test_a_regex_answer_found_only_inside_a_longer_line_is_a_red_flag_not_a_repair() -> None:
    parser = RegexAnswer(r"TOTAL:\s*(?P<total>-?\d+)")
    with pytest.raises(RedFlag) as caught:
        parser.parse("Adding the next number:\nTOTAL: 1857 + 250 = 2107", None)
    assert caught.value.reason == "parse"
    assert "TOTAL: 1857 + 250 = 2107" in caught.value.detail and "whole" in caught.value.detail
    assert parser.parse("1857 + 250 = 2107\nTOTAL: 2107", None).payload == {"total": "2107"}
    # The spec may say otherwise (answer.whole_line: false): then the last match anywhere counts.
    anywhere = RegexAnswer(r"TOTAL:\s*(?P<total>-?\d+)", whole_line=False)
    assert anywhere.parse("TOTAL: 1857 + 250 = 2107", None).payload == {"total": "1857"}


def test_regex_answer_votes_on_the_vote_on_groups() -> None:
    parser = RegexAnswer(r"(?P<answer>\d+) because (?P<why>.*)", vote_on=["answer"])
    assert parser.parse("4 because two twos", None).key == parser.parse("4 because 2+2", None).key


def test_regex_answer_without_a_match_is_a_parse_red_flag() -> None:
    with pytest.raises(RedFlag) as caught:
        RegexAnswer(r"Answer: (?P<answer>\d+)").parse("I am not sure.", None)
    assert caught.value.reason == "parse"


@pytest.mark.parametrize(
    ("pattern", "fragment"), [("(a", "not a valid regular expression"), (r"(\d+)", "no named group")]
)
def test_a_bad_pattern_is_refused_with_a_reason(pattern: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        compile_pattern(pattern)


# --- text -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("normalize", "expected"),
    [
        (True, "the answer is paris"),
        (False, "  The   Answer\tis PARIS \n"),
        (["strip"], "The   Answer\tis PARIS"),
        (["casefold", "collapse"], " the answer is paris "),
    ],
)
def test_text_answer_is_normalised_as_asked(normalize: bool | list[str], expected: str) -> None:
    parsed = TextAnswer(normalize).parse("  The   Answer\tis PARIS \n", None)
    assert parsed.payload == expected
    assert parsed.key == canonical(expected)


def test_text_answers_differing_in_spacing_and_case_are_one_vote() -> None:
    parser = TextAnswer()
    assert parser.parse("Paris  is\nthe capital", None).key == parser.parse(" paris is the CAPITAL ", None).key
    assert parser.parse("Paris", None).key != parser.parse("Lyon", None).key


def test_an_empty_text_answer_is_a_parse_red_flag() -> None:
    with pytest.raises(RedFlag) as caught:
        TextAnswer().parse(" \n\t ", None)
    assert caught.value.reason == "parse"


@pytest.mark.parametrize("normalize", [["strip", "upper"], "strip", [1]])
def test_unknown_normalisation_is_refused(normalize: Any) -> None:
    with pytest.raises(ValueError, match="strip, collapse, casefold"):
        normalize_steps(normalize)


# --- hanoi and schemas ----------------------------------------------------------------------------


def test_hanoi_answer_is_the_move_and_the_next_state() -> None:
    state = hanoi.initial_state(3)
    parsed = HanoiAnswer().parse("move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]", state)
    assert parsed.payload == {"move": [1, 0, 2], "next_state": [[3, 2], [], [1]]}
    assert parsed.key == canonical(parsed.payload)


def test_hanoi_answer_with_a_lost_disk_is_a_parse_red_flag() -> None:
    with pytest.raises(RedFlag) as caught:
        HanoiAnswer().parse("move = [1, 0, 2]\nnext_state = [[3], [], [1]]", hanoi.initial_state(3))
    assert caught.value.reason == "parse"


@pytest.mark.parametrize("schema", [{"type": 5}, {"required": "n"}, 5, "object"])
def test_a_schema_that_is_not_a_schema_is_refused(schema: Any) -> None:
    with pytest.raises(ValueError, match="not a JSON Schema"):
        schema_validator(schema)


def test_json_nested_past_the_decoders_depth_is_a_red_flag_not_a_crash() -> None:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(RedFlag, match="nested too deeply"):
        JsonAnswer().parse(f"The answer: {deep}", None)


@pytest.mark.parametrize(
    ("answer", "response"),
    [
        ({"format": "json"}, 'so: {"b": [1, 2], "a": "x"}'),
        ({"format": "json", "vote_on": ["a"]}, '{"b": 2, "a": {"y": 1, "x": 0}}'),
        ({"format": "regex", "pattern": r"move (?P<disk>\d+)(?: to (?P<peg>\d+))?"}, "so:\nmove 3"),
        ({"format": "regex", "pattern": r"(?P<answer>\d+) because (?P<why>.*)", "vote_on": ["answer"]}, "7 because x"),
        ({"format": "text"}, "  The   Answer\n"),
        ({"format": "text", "normalize": ["strip"]}, "  The   Answer\n"),
        ({"format": "hanoi"}, "move = [1, 0, 2]\nnext_state = [[2, 3], [], [1]]"),
    ],
)
def test_key_of_a_payload_is_the_key_the_parser_gives_its_response(answer: dict[str, Any], response: str) -> None:
    from maker_workers.domains.spec import AnswerSpec, parser_for

    spec = AnswerSpec.model_validate(answer)
    parsed = parser_for(spec).parse(response, None)
    assert key_of(spec, json.loads(json.dumps(parsed.payload))) == parsed.key  # as a trace hands it back


def test_key_of_a_json_payload_without_a_vote_on_field_is_a_schema_red_flag() -> None:
    from maker_workers.domains.spec import AnswerSpec

    with pytest.raises(RedFlag) as caught:
        key_of(AnswerSpec(format="json", vote_on=["a"]), {"b": 1})
    assert caught.value.reason == "schema"


def test_the_residue_is_what_a_response_says_besides_its_answer() -> None:
    # Two votes alike in their reasoning are copies of one draw; alike in a bare answer, merely both right.
    assert (
        RegexAnswer(r"CITY: (?P<city>\w+)").residue("Its capital is Berlin.\nCITY: Berlin") == "Its capital is Berlin."
    )
    assert RegexAnswer(r"ANSWER: (?P<a>\w+)").residue("ANSWER: QMVTB").strip() == ""
    assert JsonAnswer().residue('6 * 7 is 42.\n{"answer": 42}').strip() == "6 * 7 is 42."
    assert TextAnswer().residue("The capital of France is Paris.") == ""
    hanoi_text = "Disk 1 moves next.\nmove = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"
    assert HanoiAnswer().residue(hanoi_text).strip() == "Disk 1 moves next."
