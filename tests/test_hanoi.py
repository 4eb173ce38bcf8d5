"""The Hanoi domain: prompt, strict red-flag parser (MAKER.md), transition, optimal sequence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maker_workers.domains import hanoi
from maker_workers.errors import ConfigError


def test_initial_state_and_goal() -> None:
    assert hanoi.initial_state(3) == [[3, 2, 1], [], []]
    assert hanoi.goal_state(3) == [[], [], [3, 2, 1]]
    assert hanoi.n_steps(20) == 1_048_575
    with pytest.raises(ConfigError, match="at least 1"):
        hanoi.initial_state(0)


@pytest.mark.parametrize("n", range(1, 11))
def test_following_the_prompted_strategy_solves_in_2n_minus_1_moves(n: int) -> None:
    state = hanoi.initial_state(n)
    moves = list(hanoi.optimal_moves(n))
    for move in moves:
        state = hanoi.apply_move(state, move)
    assert len(moves) == 2**n - 1
    assert state == hanoi.goal_state(n)


@pytest.mark.parametrize(("n", "cycle"), [(3, "0 -> 2 -> 1 -> 0"), (4, "0 -> 1 -> 2 -> 0"), (1, "0 -> 2 -> 1 -> 0")])
def test_prompt_states_the_direction_that_ends_on_peg_2(n: int, cycle: str) -> None:
    system, user = hanoi.messages(hanoi.initial_state(n), None)
    assert cycle in system["content"]
    assert "Previous move: none" in user["content"]
    assert f"Current state: {hanoi.format_state(hanoi.initial_state(n))}" in user["content"]


def test_prompt_round_trips_through_read_prompt() -> None:
    state, move = [[3], [2, 1], []], (1, 0, 1)
    user = hanoi.messages(state, move)[1]["content"]
    assert "Previous move: [1, 0, 1]" in user
    assert hanoi.read_prompt(user) == (state, move)


def test_illegal_moves_are_refused() -> None:
    state = [[3, 2], [1], []]
    with pytest.raises(hanoi.IllegalMove):
        hanoi.apply_move(state, (2, 0, 1))  # onto the smaller disk 1
    with pytest.raises(hanoi.IllegalMove):
        hanoi.apply_move(state, (3, 0, 2))  # not the top disk
    with pytest.raises(hanoi.IllegalMove):
        hanoi.apply_move(state, (1, 1, 1))


# --- the strict parser -----------------------------------------------------------------------------


def test_last_occurrence_counts() -> None:
    text = (
        "move = [1, 0, 1]\nnext_state = [[3, 2], [1], []]\n"
        "Wait, correction:\nmove = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]"
    )
    assert hanoi.parse(text, 3) == ((1, 0, 2), [[3, 2], [], [1]])


def test_a_malformed_last_occurrence_is_a_red_flag_even_after_a_good_one() -> None:
    text = "move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]\nmove = [1, 0]"
    with pytest.raises(hanoi.RedFlag):
        hanoi.parse(text, 3)


@pytest.mark.parametrize(
    "text",
    [
        "move = [1, 0, 2]",  # no next_state
        "next_state = [[3, 2], [], [1]]",  # no move
        "move = [1, 0, 2, 1]\nnext_state = [[3, 2], [], [1]]",  # four numbers
        "move = [1, 0, 2.0]\nnext_state = [[3, 2], [], [1]]",  # not an integer
        "move = [1, 0, 2]\nnext_state = [[3, 2], [1]]",  # two pegs
        "move = [1, 0, 2]\nnext_state = [[3, 2], [], [1], []]",  # four pegs
        "move = [1, 0, 2]\nnext_state = [[3, 2], [], []]",  # disk 1 missing
        "move = [1, 0, 2]\nnext_state = [[3, 2, 1], [], [1]]",  # disk 1 twice
        "move = [1, 0, 2]\nnext_state = [[3, 2], [], [4]]",  # not 1..n
        'move = [1, 0, 2]\nnext_state = [[3, 2], [], ["1"]]',  # a string
        "move: [1, 0, 2]\nnext_state: [[3, 2], [], [1]]",  # wrong form
        "next_move = [1, 0, 2]\nnext_state = [[3, 2], [], [1]]",  # not the key `move`
    ],
)
def test_malformed_answers_are_red_flags(text: str) -> None:
    with pytest.raises(hanoi.RedFlag):
        hanoi.parse(text, 3)


def test_a_wrong_but_well_formed_answer_parses() -> None:
    # red flags are about format only: an illegal move is still a vote
    assert hanoi.parse("move = [3, 0, 1]\nnext_state = [[2, 1], [3], []]", 3) == ((3, 0, 1), [[2, 1], [3], []])


def states(n: int) -> st.SearchStrategy[list[list[int]]]:
    return st.permutations(list(range(1, n + 1))).flatmap(
        lambda disks: st.tuples(st.integers(0, n), st.integers(0, n)).map(
            lambda cuts: [disks[: min(cuts)], disks[min(cuts) : max(cuts)], disks[max(cuts) :]]
        )
    )


spaces = st.sampled_from(["", " ", "  ", "\n", " \n "])
noise = st.text(alphabet=st.characters(blacklist_characters="[]=", codec="utf-8"), max_size=40)


@st.composite
def responses(draw: st.DrawFn) -> tuple[str, int, hanoi.Move, hanoi.State]:
    n = draw(st.integers(1, 8))
    move = draw(st.tuples(st.integers(0, 9), st.integers(0, 2), st.integers(0, 2)))
    state = draw(states(n))
    s = lambda: draw(spaces)  # noqa: E731
    pegs = [f"[{s()}{(',' + s()).join(map(str, peg))}{s()}]" for peg in state]
    move_text = f"move{s()}={s()}[{s()}{move[0]}{s()},{s()}{move[1]}{s()},{s()}{move[2]}{s()}]"
    state_text = f"next_state{s()}={s()}[{s()}{pegs[0]},{s()}{pegs[1]},{s()}{pegs[2]}{s()}]"
    body = f"{draw(noise)}\n{move_text}\n{draw(noise)}\n{state_text}\n{draw(noise)}"
    if draw(st.booleans()):
        body = f"```\n{body}\n```"
    return body, n, move, state


@given(responses())
def test_well_formed_responses_parse_to_what_was_written(case: tuple[str, int, hanoi.Move, hanoi.State]) -> None:
    text, n, move, state = case
    assert hanoi.parse(text, n) == (move, state)


@given(responses(), st.sampled_from(["drop_disk", "dup_disk", "short_move", "no_state"]))
def test_broken_responses_never_parse(case: tuple[str, int, hanoi.Move, hanoi.State], damage: str) -> None:
    text, n, _, state = case
    if damage == "short_move":
        text += "\nmove = [1, 2]"
    elif damage == "no_state":
        text = text.replace("next_state", "state")
    else:
        pegs = [list(p) for p in state]
        if damage == "drop_disk":
            next(p for p in pegs if p).pop()
        else:
            pegs[0].append(n)
        text += f"\nnext_state = {pegs}"
    with pytest.raises(hanoi.RedFlag):
        hanoi.parse(text, n)


@given(responses(), responses())
def test_same_parsed_pair_is_the_same_vote(
    a: tuple[str, int, hanoi.Move, hanoi.State], b: tuple[str, int, hanoi.Move, hanoi.State]
) -> None:
    (ta, na, _, _), (tb, nb, _, _) = a, b
    pa, pb = hanoi.parse(ta, na), hanoi.parse(tb, nb)
    assert (hanoi.candidate(*pa) == hanoi.candidate(*pb)) == (pa == pb)
    assert hanoi.from_candidate(hanoi.candidate(*pa)) == pa
