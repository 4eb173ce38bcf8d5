"""Towers of Hanoi, one move per step: the prompt, the strict red-flag parser, the transition.

Pegs are 0, 1, 2; a peg is a list from bottom to top; disks are 1 (smallest) .. n.
The optimal sequence lives here too, but only the scorer and the simulated LLM may use it:
the engine never consults ground truth.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from functools import cache

from maker_workers.domains.base import Parsed, RedFlag, SemanticMatch
from maker_workers.errors import ConfigError

State = list[list[int]]
Move = tuple[int, int, int]


class IllegalMove(ValueError):
    pass


def initial_state(n: int) -> State:
    if n < 1:
        raise ConfigError(f"the number of disks must be at least 1, got {n}")
    return [list(range(n, 0, -1)), [], []]


def goal_state(n: int) -> State:
    return [[], [], list(range(n, 0, -1))]


def n_steps(n: int) -> int:
    return 2**n - 1


def disks_of(state: State) -> int:
    return sum(len(peg) for peg in state)


def cycle_step(n: int) -> int:
    """+1 (0->1->2->0) for even n, -1 (0->2->1->0) for odd n: the direction that ends on peg 2."""
    return 1 if n % 2 == 0 else -1


def cycle_text(n: int) -> str:
    return "0 -> 1 -> 2 -> 0" if n % 2 == 0 else "0 -> 2 -> 1 -> 0"


def input_hash(state: State, previous_move: Move | None) -> str:
    """Names one step's exact input: a vote counts only toward the input its prompt was built from."""
    text = json.dumps([state, previous_move], separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def format_state(state: State) -> str:
    return json.dumps(state, separators=(", ", ": "))


def format_move(move: Move | None) -> str:
    return "none" if move is None else f"[{move[0]}, {move[1]}, {move[2]}]"


@cache  # built for every sample otherwise, and the same for every step of a run
def system_prompt(n: int) -> str:
    return f"""You are solving the Towers of Hanoi puzzle with {n} disks, one move at a time.
There are three pegs, numbered 0, 1 and 2, and disks numbered 1 (smallest) to {n} (largest).
A state lists each peg's disks from bottom to top. At the start all disks are on peg 0:
{format_state(initial_state(n))}. The goal is all disks on peg 2.

Rules:
- Move one disk at a time; only the top disk of a peg can be moved.
- Never place a larger disk on top of a smaller one.

Strategy (follow it exactly):
- If the previous move did not move disk 1 (or there was no previous move), move disk 1 one peg
  along the cycle {cycle_text(n)}.
- Otherwise, make the only legal move that does not move disk 1.

Answer with your reasoning kept short, then end with exactly these two lines:
move = [disk, from_peg, to_peg]
next_state = [[...], [...], [...]]"""


def user_prompt(state: State, previous_move: Move | None) -> str:
    return (
        f"Previous move: {format_move(previous_move)}\n"
        f"Current state: {format_state(state)}\n"
        "Give the next move and the state after it."
    )


def messages(state: State, previous_move: Move | None) -> list[dict[str, str]]:
    n = disks_of(state)
    return [
        {"role": "system", "content": system_prompt(n)},
        {"role": "user", "content": user_prompt(state, previous_move)},
    ]


_PREVIOUS = re.compile(r"^Previous move:\s*(none|\[\s*\d+\s*,\s*\d+\s*,\s*\d+\s*\])\s*$", re.M)
_CURRENT = re.compile(r"^Current state:\s*(\[.*\])\s*$", re.M)


def residue(text: str) -> str:
    """The response without its `move =` and `next_state =` lines: the reasoning around the answer."""
    return _ANSWER_LINE.sub("", text)


def read_prompt(text: str) -> tuple[State, Move | None]:
    """Recover (state, previous move) from a user prompt: what the simulated LLM reads."""
    prev, cur = _PREVIOUS.findall(text), _CURRENT.findall(text)
    if not prev or not cur:
        raise ValueError("prompt lacks the 'Previous move:' or 'Current state:' line")
    state = json.loads(cur[-1])
    move = None if prev[-1] == "none" else tuple(json.loads(prev[-1]))
    return state, move  # type: ignore[return-value]


# --- strict parsing -------------------------------------------------------------------------------

# ASCII digits only (\d would take '١' or '３' too), and few of them: a number no Hanoi answer needs is not read.
_NUMBER = r"-?[0-9]{1,6}"
_INT = rf"\s*({_NUMBER})\s*"
_LIST = rf"\[\s*((?:{_NUMBER}\s*(?:,\s*{_NUMBER}\s*)*)?)\]"
_MOVE_KEY = re.compile(r"(?<![\w])move\s*=\s*")
_STATE_KEY = re.compile(r"(?<![\w])next_state\s*=\s*")
_MOVE_VALUE = re.compile(rf"\[{_INT},{_INT},{_INT}\]")
_STATE_VALUE = re.compile(rf"\[\s*{_LIST}\s*,\s*{_LIST}\s*,\s*{_LIST}\s*\]")
_ANSWER_LINE = re.compile(r"^.*(?<![\w])(?:move|next_state)\s*=.*$", re.M)
_GOES_ON = re.compile(r"[\[\]{}=\d]")  # on the state's line after it: the value did not end where it seemed to


def _last_value(key: re.Pattern[str], value: re.Pattern[str], text: str, name: str) -> re.Match[str]:
    starts = [m.end() for m in key.finditer(text)]
    if not starts:
        raise RedFlag("parse", f"no '{name} =' in the response")
    match = value.match(text, starts[-1])
    if match is None:
        raise RedFlag("parse", f"the last '{name} =' is not in the required form")
    return match


def parse(text: str, n: int) -> tuple[Move, State]:
    """Parse `move = [d, f, t]` and `next_state = [[..], [..], [..]]`; the last occurrence counts.

    Raises RedFlag unless the move is exactly three integers and next_state is exactly three
    lists of integers holding 1..n once each, the state comes after the move and nothing on its line
    continues it (`]]`, `, [4]`). Correctness is not checked: a wrong move is a vote.
    """
    move_m = _last_value(_MOVE_KEY, _MOVE_VALUE, text, "move")
    state_m = _last_value(_STATE_KEY, _STATE_VALUE, text, "next_state")
    if move_m.start() > state_m.start():  # the last move and the last state were not written as one answer
        raise RedFlag("parse", "a 'move =' comes after the last 'next_state ='")
    if _GOES_ON.search(text[state_m.end() :].partition("\n")[0]):
        raise RedFlag("parse", "the last 'next_state =' line goes on past the state")
    move = (int(move_m[1]), int(move_m[2]), int(move_m[3]))
    state = [[int(x) for x in group.split(",")] if group.strip() else [] for group in state_m.groups()]
    if sorted(d for peg in state for d in peg) != list(range(1, n + 1)):
        raise RedFlag("parse", f"next_state must hold disks 1..{n} exactly once each")
    return move, state


def disks_in(text: str) -> int:
    """The number of disks the last `next_state =` in a response holds (0 when there is none to read)."""
    try:
        state_m = _last_value(_STATE_KEY, _STATE_VALUE, text, "next_state")
    except RedFlag:
        return 0
    return sum(len(group.split(",")) for group in state_m.groups() if group.strip())


def candidate(move: Move, next_state: State) -> str:
    """The canonical vote: two answers are the same vote iff they parse to the same pair."""
    return json.dumps({"move": list(move), "next_state": next_state}, separators=(",", ":"))


def from_candidate(text: str) -> tuple[Move, State]:
    data = json.loads(text)
    return tuple(data["move"]), data["next_state"]  # type: ignore[return-value]


# --- transition and ground truth ------------------------------------------------------------------


def apply_move(state: State, move: Move) -> State:
    """The legal successor of `state`, or IllegalMove. Used to replay and score, not to vote."""
    disk, src, dst = move
    if not (0 <= src <= 2 and 0 <= dst <= 2) or src == dst:
        raise IllegalMove(f"pegs must be two different numbers in 0..2, got {src} -> {dst}")
    if not state[src] or state[src][-1] != disk:
        raise IllegalMove(f"disk {disk} is not on top of peg {src}")
    if state[dst] and state[dst][-1] < disk:
        raise IllegalMove(f"disk {disk} cannot go on the smaller disk {state[dst][-1]}")
    new = [list(peg) for peg in state]
    new[src].pop()
    new[dst].append(disk)
    return new


def legal_moves(state: State) -> list[Move]:
    return [
        (state[src][-1], src, dst)
        for src in range(3)
        for dst in range(3)
        if src != dst and state[src] and (not state[dst] or state[dst][-1] > state[src][-1])
    ]


def strategy_move(state: State, previous_move: Move | None) -> Move:
    """The move the prompt's strategy prescribes (which is the optimal one)."""
    n = disks_of(state)
    if previous_move is None or previous_move[0] != 1:
        src = next((i for i, peg in enumerate(state) if peg and peg[-1] == 1), None)
        if src is None:
            raise IllegalMove("disk 1 is on top of no peg: the state is broken")
        return (1, src, (src + cycle_step(n)) % 3)
    others = [m for m in legal_moves(state) if m[0] != 1]
    if len(others) != 1:
        raise IllegalMove("no single legal move avoids disk 1: the state is finished or broken")
    return others[0]


def optimal_moves(n: int) -> Iterator[Move]:
    state, move = initial_state(n), None
    for _ in range(n_steps(n)):
        move = strategy_move(state, move)
        state = apply_move(state, move)
        yield move


# --- the task seam ---------------------------------------------------------------------------------


def move_of(answer: dict | None) -> Move | None:
    """The move inside a winning answer (the payload of a Hanoi vote), or None before the first step."""
    return None if answer is None else tuple(answer["move"])  # type: ignore[return-value]


def payload(move: Move, next_state: State) -> dict:
    return {"move": list(move), "next_state": next_state}


class HanoiTask:
    """Towers of Hanoi behind the `Task` protocol; prompts, parse and contest keys exactly as before."""

    name = "hanoi"
    max_output_tokens: int | None = None
    max_steps: int | None = None  # done after exactly 2^n - 1 steps
    semantic: SemanticMatch | None = None  # moves are voted on exactly

    def __init__(self, disks: int) -> None:
        initial_state(disks)  # validates
        self.disks = disks

    def definition(self) -> dict:
        return {"kind": "hanoi", "disks": self.disks}

    def initial_state(self) -> State:
        return initial_state(self.disks)

    def total_steps(self) -> int:
        return n_steps(self.disks)

    def messages(self, state: State, step: int, previous: dict | None, variant: int = 0) -> list[dict[str, str]]:
        return messages(state, move_of(previous))  # one phrasing

    def residue(self, text: str) -> str:
        return residue(text)

    def parse(self, text: str, state: State) -> Parsed:
        move, next_state = parse(text, self.disks)
        return Parsed(candidate(move, next_state), payload(move, next_state))

    def next_state(self, state: State, step: int, previous: dict | None, answer: dict) -> State:
        return answer["next_state"]

    def done(self, state: State, step: int) -> bool:
        return step >= n_steps(self.disks)

    def input_hash(self, state: State, step: int, previous: dict | None) -> str:
        return input_hash(state, move_of(previous))
