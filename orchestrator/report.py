"""Scoring and the run report. Only here is the optimal sequence consulted, and only after commit."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

from maker_workers.domains import hanoi
from orchestrator.runner import CommittedStep


class Scorer:
    """Compares each committed move with the optimal one, as the steps are committed."""

    def __init__(self, disks: int) -> None:
        self.disks = disks
        self._optimal = hanoi.optimal_moves(disks)
        self.steps = 0
        self.errors = 0
        self.max_rounds = 0
        self.votes_per_step: Counter[int] = Counter()
        self.last_state: hanoi.State = hanoi.initial_state(disks)

    def observe(self, step: CommittedStep) -> None:
        self.steps += 1
        self.errors += tuple(step.move) != next(self._optimal)
        self.max_rounds = max(self.max_rounds, step.rounds)
        self.votes_per_step[step.votes] += 1
        self.last_state = step.next_state

    def replay(self, moves: list[hanoi.Move], state: hanoi.State) -> None:
        """Score the moves an earlier orchestrator committed, before a resumed run goes on."""
        for move in moves:
            self.steps += 1
            self.errors += tuple(move) != next(self._optimal)
        self.last_state = state

    @property
    def solved(self) -> bool:
        return self.last_state == hanoi.goal_state(self.disks)


class RunReport(BaseModel):
    run_id: str
    disks: int
    steps: int
    solved: bool
    errors: int
    k: int
    samples: int
    votes: int
    red_flags: int
    red_flags_by_reason: dict[str, int]
    provider_errors: int
    late_votes: int
    duplicates: int
    max_rounds: int
    votes_per_step: dict[str, int]
    input_tokens: int
    output_tokens: int
    wall_s: float
    temperature_omitted: bool = False
    failure: str | None = None

    @classmethod
    def build(
        cls, run_id: str, k: int, scorer: Scorer, stats: dict[str, int], wall_s: float, failure: str | None = None
    ) -> RunReport:
        return cls(
            run_id=run_id,
            disks=scorer.disks,
            steps=scorer.steps,
            solved=scorer.solved and failure is None,
            errors=scorer.errors,
            k=k,
            samples=stats.get("samples", 0),
            votes=stats.get("votes", 0),
            red_flags=stats.get("red_flags", 0),
            red_flags_by_reason={
                name.removeprefix("red_flag:"): n for name, n in stats.items() if name.startswith("red_flag:")
            },
            provider_errors=stats.get("errors", 0),
            late_votes=stats.get("late_votes", 0),
            duplicates=stats.get("duplicates", 0),
            max_rounds=scorer.max_rounds,
            votes_per_step={str(v): n for v, n in sorted(scorer.votes_per_step.items())},
            input_tokens=stats.get("input_tokens", 0),
            output_tokens=stats.get("output_tokens", 0),
            wall_s=round(wall_s, 3),
            temperature_omitted=bool(stats.get("temperature_omitted")),
            failure=failure,
        )
