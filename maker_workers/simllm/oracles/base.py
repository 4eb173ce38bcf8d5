"""What the simulated model needs to know about a task to answer it right, or wrong in a realistic way.

An `Oracle` reads a user prompt and, if it recognises it, returns a `Problem`: one step's question with
its ground truth. The model (`simllm.model`) owns the error mix (how often to be wrong, and how); the
problem owns what the right answer, the usual mistake, a corrupt answer and a malformed response look
like. Oracles live only in the simulator: the engine never consults ground truth.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

A = TypeVar("A")

FILLER = "Let me reason about every step carefully. "
"""Repeated ~90 times before an over-long answer: about 950 tokens, past the usual 750-token red flag."""


class Problem(Protocol[A]):
    """One step's question as read from a prompt. `A` is the oracle's own answer value."""

    filler: str  # the over-long answers' padding sentence

    def right(self, rng: random.Random) -> A:
        """The right answer. `rng` is for a broken input that has none, where a model would still answer."""
        ...

    def mistake(self) -> A | None:
        """The step's one plausible mistake (so wrong answers collide), or None if there is none here."""
        ...

    def corrupt(self, right: A) -> A:
        """The right core with a damaged secondary field."""
        ...

    def other(self, right: A, mistake: A | None, rng: random.Random) -> A:
        """Some other wrong answer, drawn with `rng`; neither `right` nor `mistake` when avoidable."""
        ...

    def render(self, answer: A) -> str:
        """The answer as a model's response: short reasoning, then the answer in the task's format."""
        ...

    def malformed(self, answer: A, rng: random.Random) -> str:
        """A response that fails strict parsing (missing field, broken syntax, prose only)."""
        ...


@dataclass(frozen=True)
class Oracle:
    """A task the simulated model can answer: `read` returns None for a prompt that is not this task's and
    raises ValueError for one that is but cannot be read. `cue` names the lines it looks for."""

    name: str
    cue: str
    read: Callable[[str], Problem[Any] | None]
