"""How the simulated model answers one Hanoi prompt.

Of the well-formed answers a share `error_rate` is wrong (so p = 1 - error_rate among valid ones).
Wrong answers mostly repeat the step's one plausible mistake (collisions); now and then the right
move comes with a corrupted next_state; the rest are other legal but wrong moves. Separately, small
shares of answers are malformed or over-long (red flags). At temperature 0 the answer to a prompt is
a pure function of (seed, prompt); above it, draws come from the server's seeded generator.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading

from pydantic import BaseModel, Field

from maker_workers.domains import hanoi


class SimConfig(BaseModel):
    error_rate: float = Field(0.01, ge=0.0, lt=0.5, description="share of well-formed answers that are wrong")
    collision_share: float = Field(0.8, ge=0.0, le=1.0, description="of wrong answers: the step's plausible one")
    corrupt_share: float = Field(0.1, ge=0.0, le=1.0, description="of wrong answers: right move, corrupt state")
    malformed_rate: float = Field(0.01, ge=0.0, lt=1.0)
    too_long_rate: float = Field(0.005, ge=0.0, lt=1.0)
    latency_ms: float = Field(0.0, ge=0.0, description="mean of the exponential response latency")
    seed: int = 0


class Answer(BaseModel):
    text: str
    output_tokens: int
    truncated: bool


def count_tokens(text: str) -> int:
    """About four characters a token, as the usual rule of thumb for English."""
    return max(1, math.ceil(len(text) / 4))


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


class SimModel:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()

    def _rng_for(self, prompt: str, temperature: float) -> random.Random:
        if temperature == 0.0:
            digest = hashlib.sha256(f"{self.config.seed}\n{prompt}".encode()).digest()
            return random.Random(int.from_bytes(digest[:8], "big"))
        with self._lock:
            return random.Random(self._rng.getrandbits(64))

    def latency_s(self) -> float:
        if self.config.latency_ms <= 0:
            return 0.0
        with self._lock:
            return self._rng.expovariate(1000.0 / self.config.latency_ms)

    def answer(self, prompt: str, temperature: float, max_tokens: int | None) -> Answer:
        state, previous = hanoi.read_prompt(prompt)
        rng = self._rng_for(prompt, temperature)
        cfg = self.config
        try:
            right = hanoi.strategy_move(state, previous)
        except hanoi.IllegalMove:  # an earlier wrong commit broke the puzzle; a model would still answer
            right = rng.choice(hanoi.legal_moves(state))
        move, next_state = right, hanoi.apply_move(state, right)
        roll = rng.random()
        if roll < cfg.malformed_rate:
            text = _malformed(move, next_state, rng)
        elif roll < cfg.malformed_rate + cfg.too_long_rate:
            text = "Let me reason about every disk carefully. " * 90 + _formatted(move, next_state, previous)
        else:
            if rng.random() < cfg.error_rate:
                move, next_state = self._wrong(state, previous, rng)
            text = _formatted(move, next_state, previous)
        tokens = count_tokens(text)
        if max_tokens is not None and tokens > max_tokens:
            return Answer(text=text[: 4 * max_tokens], output_tokens=max_tokens, truncated=True)
        return Answer(text=text, output_tokens=tokens, truncated=False)

    def _wrong(
        self, state: hanoi.State, previous: hanoi.Move | None, rng: random.Random
    ) -> tuple[hanoi.Move, hanoi.State]:
        try:
            right, mistake = hanoi.strategy_move(state, previous), plausible_mistake(state, previous)
        except hanoi.IllegalMove:
            move = rng.choice(hanoi.legal_moves(state))
            return move, hanoi.apply_move(state, move)
        kind = rng.random()
        if kind < self.config.collision_share:
            return mistake, hanoi.apply_move(state, mistake)
        if kind < self.config.collision_share + self.config.corrupt_share:
            return right, _corrupt(hanoi.apply_move(state, right), right)
        others = [m for m in hanoi.legal_moves(state) if m not in (right, mistake)]
        move = rng.choice(others) if others else mistake
        return move, hanoi.apply_move(state, move)
