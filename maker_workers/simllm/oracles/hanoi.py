"""Towers of Hanoi steps: the prompt's `Previous move:` and `Current state:` lines, answered by the strategy."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from maker_workers.domains import hanoi
from maker_workers.simllm.oracles.base import Oracle

Answer = tuple[hanoi.Move, hanoi.State]

_CUES = (re.compile(r"^Previous move:", re.M), re.compile(r"^Current state:", re.M))


def plausible_mistake(state: hanoi.State, previous: hanoi.Move | None) -> hanoi.Move:
    """The wrong move a model most often makes here: disk 1 the wrong way, or disk 1 twice in a row."""
    right = hanoi.strategy_move(state, previous)
    if right[0] == 1:
        return (1, right[1], 3 - right[1] - right[2])
    src = next((i for i, peg in enumerate(state) if peg and peg[-1] == 1), None)
    if src is None:
        raise hanoi.IllegalMove("disk 1 is on top of no peg")
    return (1, src, (src + hanoi.cycle_step(hanoi.disks_of(state))) % 3)


def _corrupt(state: hanoi.State, move: hanoi.Move) -> hanoi.State:
    """The state after `move`, but with the moved disk on the third peg: still disks 1..n once each."""
    wrong = [list(peg) for peg in state]
    disk, src, dst = move
    wrong[dst].remove(disk)
    wrong[3 - src - dst].append(disk)
    return wrong


def _formatted(move: hanoi.Move, next_state: hanoi.State, previous: hanoi.Move | None) -> str:
    return (
        f"The previous move was {hanoi.format_move(previous)}, so I follow the strategy.\n"
        f"move = [{move[0]}, {move[1]}, {move[2]}]\n"
        f"next_state = {hanoi.format_state(next_state)}"
    )


def _malformed(move: hanoi.Move, next_state: hanoi.State, rng: random.Random) -> str:
    broken_state = [list(peg) for peg in next_state]
    for peg in broken_state:
        if peg:
            peg.pop()
            break
    choices = [
        f"move = [{move[0]}, {move[1]}]\nnext_state = {hanoi.format_state(next_state)}",
        f"move = [{move[0]}, {move[1]}, {move[2]}]\nnext_state = {hanoi.format_state(broken_state)}",
        f"move = [{move[0]}, {move[1]}, {move[2]}]\nThe pegs will then be {next_state}.",
        f"I move disk {move[0]} from peg {move[1]} to peg {move[2]}.",
    ]
    return rng.choice(choices)


@dataclass(frozen=True)
class HanoiProblem:
    state: hanoi.State
    previous: hanoi.Move | None
    filler: str = "Let me reason about every disk carefully. "

    def _after(self, move: hanoi.Move) -> Answer:
        return move, hanoi.apply_move(self.state, move)

    def right(self, rng: random.Random) -> Answer:
        try:
            return self._after(hanoi.strategy_move(self.state, self.previous))
        except hanoi.IllegalMove:  # an earlier wrong commit broke the puzzle; a model would still answer
            moves = hanoi.legal_moves(self.state)
            if not moves:
                raise ValueError("the state has no disk to move") from None
            return self._after(rng.choice(moves))

    def mistake(self) -> Answer | None:
        try:
            return self._after(plausible_mistake(self.state, self.previous))
        except hanoi.IllegalMove:
            return None

    def corrupt(self, right: Answer) -> Answer:
        return right[0], _corrupt(right[1], right[0])

    def other(self, right: Answer, mistake: Answer | None, rng: random.Random) -> Answer:
        if mistake is None:
            return self._after(rng.choice(hanoi.legal_moves(self.state)))
        others = [m for m in hanoi.legal_moves(self.state) if m not in (right[0], mistake[0])]
        return self._after(rng.choice(others)) if others else mistake

    def render(self, answer: Answer) -> str:
        return _formatted(answer[0], answer[1], self.previous)

    def malformed(self, answer: Answer, rng: random.Random) -> str:
        return _malformed(answer[0], answer[1], rng)


def read(prompt: str) -> HanoiProblem | None:
    if not all(cue.search(prompt) for cue in _CUES):
        return None
    state, previous = hanoi.read_prompt(prompt)
    return HanoiProblem(state, previous)


ORACLE = Oracle("hanoi", "'Previous move:' and 'Current state:' lines", read)
