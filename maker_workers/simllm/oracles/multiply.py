"""One step of long multiplication: a digit of A times the multiplier B plus the carry in.

Reads `Digit:`, `Multiplier:` and `Carry in:` lines; the answer is the JSON object {"digit": 0..9, "carry": n}
with digit + 10 * carry = digit_of_A * B + carry_in.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

from maker_workers.simllm.oracles.base import FILLER, Oracle

Answer = tuple[int, int]  # (digit, carry)

_LINES = {
    name: re.compile(rf"^{label}:\s*(\d+)\s*$", re.M)
    for name, label in (("digit", "Digit"), ("multiplier", "Multiplier"), ("carry", "Carry in"))
}


def _split(total: int) -> Answer:
    return total % 10, total // 10


@dataclass(frozen=True)
class MultiplyProblem:
    digit: int
    multiplier: int
    carry_in: int
    filler: str = FILLER

    def right(self, rng: random.Random) -> Answer:
        return _split(self.digit * self.multiplier + self.carry_in)

    def mistake(self) -> Answer:
        """The carry in forgotten, or when there was none, the carry out one too high."""
        if self.carry_in:
            return _split(self.digit * self.multiplier)
        digit, carry = _split(self.digit * self.multiplier)
        return digit, carry + 1

    def corrupt(self, right: Answer) -> Answer:
        return (right[0] + 1) % 10, right[1]

    def other(self, right: Answer, mistake: Answer | None, rng: random.Random) -> Answer:
        top = max(10, 2 * right[1] + 2)
        while True:
            answer = (rng.randrange(10), rng.randrange(top))
            if answer not in (right, mistake):
                return answer

    def render(self, answer: Answer) -> str:
        total = answer[0] + 10 * answer[1]
        return (
            f"{self.digit} x {self.multiplier} + {self.carry_in} = {total}: "
            f"I write down {answer[0]} and carry {answer[1]}.\n" + json.dumps({"digit": answer[0], "carry": answer[1]})
        )

    def malformed(self, answer: Answer, rng: random.Random) -> str:
        digit, carry = answer
        return rng.choice(
            [
                json.dumps({"digit": digit}),
                f'{{"digit": {digit}, "carry": {carry}',
                json.dumps({"digit": str(digit), "carry": carry}),
                f"I write down {digit} and carry {carry}.",
            ]
        )


def read(prompt: str) -> MultiplyProblem | None:
    found = {name: pattern.findall(prompt) for name, pattern in _LINES.items()}
    if not all(found.values()):
        return None
    return MultiplyProblem(int(found["digit"][-1]), int(found["multiplier"][-1]), int(found["carry"][-1]))


ORACLE = Oracle("multiply", "'Digit:', 'Multiplier:' and 'Carry in:' lines", read)
