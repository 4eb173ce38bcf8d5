"""One step of sorting by adjacent swaps: swap the first adjacent pair that is out of order.

Reads a `Current list: [...]` line; the answer is the JSON object {"swap": [i, i + 1], "list": [...]},
`list` being the list after the swap. A sorted list has no step to take, so it is refused (HTTP 400).
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass

from maker_workers.simllm.oracles.base import FILLER, Oracle

Answer = tuple[int, list[int]]  # (i, the list after swapping positions i and i + 1)

_LINE = re.compile(r"^Current list:\s*(\[.*\])\s*$", re.M)


def _swapped(values: list[int], i: int) -> list[int]:
    new = list(values)
    new[i], new[i + 1] = new[i + 1], new[i]
    return new


@dataclass(frozen=True)
class SortProblem:
    values: list[int]
    filler: str = FILLER

    def _pairs(self, out_of_order: bool) -> list[int]:
        return [i for i in range(len(self.values) - 1) if (self.values[i] > self.values[i + 1]) == out_of_order]

    def right(self, rng: random.Random) -> Answer:
        i = self._pairs(out_of_order=True)[0]
        return i, _swapped(self.values, i)

    def mistake(self) -> Answer | None:
        """The second out-of-order pair swapped, or with only one, the first pair that is in order."""
        wrong = self._pairs(out_of_order=True)[1:] or self._pairs(out_of_order=False)
        return (wrong[0], _swapped(self.values, wrong[0])) if wrong else None

    def corrupt(self, right: Answer) -> Answer:
        """The right swap, and the last other pair of distinct neighbours swapped too."""
        i, values = right
        others = [j for j in range(len(values) - 1) if abs(j - i) > 1 and values[j] != values[j + 1]]
        return (i, _swapped(values, others[-1])) if others else (i, values[:-1])

    def other(self, right: Answer, mistake: Answer | None, rng: random.Random) -> Answer:
        taken = {right[0]} | ({mistake[0]} if mistake else set())
        choices = [j for j in range(len(self.values) - 1) if j not in taken]
        if not choices:
            return self.corrupt(right)
        j = rng.choice(choices)
        return j, _swapped(self.values, j)

    def render(self, answer: Answer) -> str:
        i, values = answer
        return (
            f"Positions {i} and {i + 1} hold {self.values[i]} and {self.values[i + 1]}, "
            "the first adjacent pair out of order, so I swap them.\n" + json.dumps({"swap": [i, i + 1], "list": values})
        )

    def malformed(self, answer: Answer, rng: random.Random) -> str:
        i, values = answer
        full = json.dumps({"swap": [i, i + 1], "list": values})
        return rng.choice(
            [
                json.dumps({"swap": [i, i + 1]}),
                full[:-1],
                json.dumps({"swap": f"{i}, {i + 1}", "list": values}),
                f"I swap positions {i} and {i + 1}, which gives {values}.",
            ]
        )


def read(prompt: str) -> SortProblem | None:
    lines = _LINE.findall(prompt)
    if not lines:
        return None
    values = json.loads(lines[-1])
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        raise ValueError("'Current list:' must be a JSON list of integers")
    if all(a <= b for a, b in itertools.pairwise(values)):
        raise ValueError("the list is already sorted: there is no pair to swap")
    return SortProblem(values)


ORACLE = Oracle("sort", "a 'Current list: [...]' line", read)
