"""What every task implements: the one seam between the engine and a task's meaning.

The engine (the run loop, the sample task, the vote script, the report) knows a task only through
`Task`. States and answers are plain JSON values, so they travel in sample messages and checkpoints
as they are; a task is rebuilt from its `definition()` (a JSON object) on any machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

JSON = Any  # a JSON value: what states and answers are

DEFAULT_THRESHOLD = 0.65
"""Semantic matching's default for the simulated model's embeddings (`SemanticMatch`); here, where nothing heavy
loads, because `maker vote --help` shows it. Chosen from those embeddings (docs/semantic.md): of 40,000 pairs of
paraphrases none is below 0.74, of 54,000 pairs of different meanings none above 0.57; 0.65 sits between."""


class RedFlag(Exception):
    """A response that must be discarded, never repaired. `reason` is a short stable label
    (parse, schema, too_long) that the run counts by."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Parsed(NamedTuple):
    """A response that passed the red flags: `key` is what votes are counted by (canonical, so
    formatting never splits votes), `payload` what the winner hands to the next step."""

    key: str
    payload: JSON


def canonical(value: JSON) -> str:
    """Canonical JSON: sorted keys, no whitespace. Equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(*parts: JSON) -> str:
    """A short stable hash of JSON values: names one step's exact input."""
    return hashlib.sha1(canonical(list(parts)).encode()).hexdigest()[:16]


class Task(Protocol):
    """A long task cut into dependent steps, each decided by one vote.

    `previous` is the winning payload of the step before (None on the first step).
    """

    name: str
    max_output_tokens: int | None  # None: the worker's own red-flag limit applies
    max_steps: int | None  # a run not done after this many steps fails (a bound for open-ended tasks)
    semantic: SemanticMatch | None  # votes on meaning (answer.match: semantic); None: on the exact vote key

    def definition(self) -> dict[str, JSON]:
        """A JSON object that `domains.load_task` turns back into this task (stored with the run)."""
        ...

    def initial_state(self) -> JSON: ...

    def total_steps(self) -> int | None:
        """The number of steps when known in advance (for progress and ETA), else None."""
        ...

    def messages(self, state: JSON, step: int, previous: JSON, variant: int = 0) -> list[dict[str, str]]:
        """The prompt of one sample; `variant` picks among the task's phrasings of it (samples rotate through them,
        so that a step's votes are less alike), taken modulo how many it has."""
        ...

    def parse(self, text: str, state: JSON) -> Parsed:
        """Strict parse of a response to the prompt built from `state`; raises RedFlag."""
        ...

    def residue(self, text: str) -> str:
        """What a response says besides its answer (its reasoning): two votes of a step alike in it, byte for
        byte, are copies of one draw, not two (the live reliability counts them once)."""
        ...

    def next_state(self, state: JSON, step: int, previous: JSON, answer: JSON) -> JSON:
        """The next step's input from the winning answer (state transfer: never recomputed)."""
        ...

    def done(self, state: JSON, step: int) -> bool:
        """Whether the task is finished when `step` steps have been committed and `state` is the result."""
        ...

    def input_hash(self, state: JSON, step: int, previous: JSON) -> str:
        """Names one step's exact input: a vote counts only toward the input its prompt was built from."""
        ...


DEFAULT_MAX_CANDIDATES = 16
"""A contest whose answers spread over more meanings than this fails its step: no margin is coming."""


@dataclass(frozen=True)
class SemanticMatch:
    """How a task's answers are matched by meaning (built from the spec's `answer`); here, beside the Task protocol
    that carries it, so every task module can name it without importing the parsers."""

    embeddings: str
    threshold: float = DEFAULT_THRESHOLD  # join: the least similarity to a candidate that joins it
    open_below: float | None = None  # a vote less similar to every candidate opens one; None: the threshold
    embeddings_base_url: str | None = None  # where the embedding model is served, apart from the completion model
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    exact_fields: tuple[str, ...] = ()  # json/regex answers: fields never merged by similarity
    vote_on: tuple[str, ...] | None = None  # json/regex answers: the fields the vote is about (None: all)
    meanings: tuple[tuple[str, ...], ...] = ()  # example answers grouped by meaning: the run measures its rule
    threshold_set: bool = True  # False: the threshold is the default, and the measured rule replaces it

    def split(self, answer: JSON) -> tuple[str, str]:
        """(group, text): the canonical JSON of the fields that must match exactly ("" without any), and the
        text whose meaning is compared: a text answer itself, or the other voted fields, one per line."""
        if not isinstance(answer, dict):
            return "", answer if isinstance(answer, str) else canonical(answer)
        missing = [f for f in self.exact_fields if f not in answer]
        if missing:
            raise RedFlag("schema", f"the answer lacks the field {missing[0]!r}")
        group = canonical({f: answer[f] for f in self.exact_fields}) if self.exact_fields else ""
        fields = self.vote_on if self.vote_on is not None else tuple(sorted(answer))
        rest = [answer[f] for f in fields if f not in self.exact_fields and f in answer]
        return group, "\n".join(value if isinstance(value, str) else canonical(value) for value in rest)
