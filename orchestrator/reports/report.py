"""Run reports. For Hanoi the optimal sequence is consulted here, and only after commit."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel

from maker_workers.domains import hanoi
from maker_workers.domains.base import JSON
from maker_workers.pricing import usd
from orchestrator import VERSION
from orchestrator.engine.meanings import MeaningsRule
from orchestrator.engine.runner import CommittedStep
from orchestrator.reports.phrasings import Candidate
from orchestrator.reports.samples import Sample


class StepLog:
    """What every report counts from the committed steps as they come."""

    def __init__(self, initial_state: JSON) -> None:
        self.steps = 0
        self.max_rounds = 0
        self.votes_per_step: Counter[int] = Counter()
        self.last_state: JSON = initial_state
        self.k_changes: list[tuple[int, int]] = []  # (step, k) where the margin changed (--adaptive-k)
        self.p_estimate: float | None = None
        self.reliability: float | None = None
        self.copy_share: float | None = None

    def observe(self, step: CommittedStep) -> None:
        self.steps += 1
        self.max_rounds = max(self.max_rounds, step.rounds)
        self.votes_per_step[step.votes] += 1
        self.last_state = step.next_state
        if not self.k_changes or step.k != self.k_changes[-1][1]:
            self.k_changes.append((step.step, step.k))
        self.p_estimate, self.reliability, self.copy_share = step.p_estimate, step.reliability, step.copy_share

    def replay(self, answers: list[JSON], state: JSON) -> None:
        """Count the steps an earlier orchestrator committed, before a resumed run goes on."""
        self.steps += len(answers)
        self.last_state = state


class Scorer(StepLog):
    """Compares each committed Hanoi move with the optimal one, as the steps are committed."""

    def __init__(self, disks: int) -> None:
        super().__init__(hanoi.initial_state(disks))
        self.disks = disks
        self._optimal = hanoi.optimal_moves(disks)
        self.errors = 0

    def observe(self, step: CommittedStep) -> None:
        super().observe(step)
        self.errors += hanoi.move_of(step.answer) != next(self._optimal)

    def replay(self, answers: list[JSON], state: JSON) -> None:
        super().replay(answers, state)
        for answer in answers:
            self.errors += hanoi.move_of(answer) != next(self._optimal)

    @property
    def solved(self) -> bool:
        return self.last_state == hanoi.goal_state(self.disks)


def cost_usd(counters: dict[str, int]) -> float | None:
    """What the counted samples cost (a run's or one model's counters); None when a price is unknown."""
    return None if counters.get("cost_unknown") else usd(counters.get("cost_nusd", 0))


def embedding_cost_usd(stats: dict[str, int]) -> float | None:
    """What a run's embedding calls cost (semantic matching); None when the embedding model's price is unknown."""
    return None if stats.get("embedding_cost_unknown") else usd(stats.get("embedding_cost_nusd", 0))


class ModelCounts(BaseModel):
    """One model's part in a run (an ensemble has several)."""

    samples: int = 0
    votes: int = 0
    red_flags: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # of its input tokens, those read from the provider's prompt cache
    cache_write_input_tokens: int = 0  # of its input tokens, those written to the prompt cache (billed at a premium)
    cost_usd: float | None = 0.0  # None when its price is unknown
    winning_votes: int | None = None  # counted for ensembles: votes for the committed winners
    winning_share: float | None = None  # its share of all winning votes

    @staticmethod
    def from_stats(stats: dict[str, int]) -> dict[str, ModelCounts]:
        """Each model's counters, from the vote script's `model:<provider:model>:<counter>` fields."""
        raw: dict[str, dict[str, int]] = {}
        for name, value in stats.items():
            if name.startswith("model:"):
                label, counter = name.removeprefix("model:").rsplit(":", 1)
                raw.setdefault(label, {})[counter] = value
        won = sum(fields.get("winning_votes", 0) for fields in raw.values())
        models = {}
        for label, fields in sorted(raw.items()):
            winning = fields.get("winning_votes", 0) if won else None
            models[label] = ModelCounts(
                **{name: fields.get(name, 0) for name in ("samples", "votes", "red_flags", "errors")},
                input_tokens=fields.get("input_tokens", 0),
                output_tokens=fields.get("output_tokens", 0),
                cached_input_tokens=fields.get("cached_input_tokens", 0),
                cache_write_input_tokens=fields.get("cache_write_input_tokens", 0),
                cost_usd=cost_usd(fields),
                winning_votes=winning,
                winning_share=round(winning / won, 4) if winning is not None else (1.0 if len(raw) == 1 else None),
            )
        return models


def wasted_samples(stats: dict[str, int]) -> int:
    """Samples no committed step counted (the stats' `committed_samples` are those that were)."""
    return max(0, stats.get("samples", 0) - stats.get("committed_samples", 0))


class RunCounts(BaseModel):
    """The figures every run reports, from its committed steps and the vote script's counters."""

    run_id: str
    version: str = VERSION  # maker's, that made the report
    steps: int
    k: int
    samples: int
    wasted_samples: int = 0  # drawn but counted by no committed step: losing guesses', and ones landing late
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
    cached_input_tokens: int = 0  # of input_tokens, those the provider read from its prompt cache
    cache_write_input_tokens: int = 0  # of input_tokens, those it wrote to its prompt cache (billed at a premium)
    copies: int = 0  # votes whose text repeated, byte for byte, one already counted in their step
    copy_share: float | None = None  # copies among the votes after each step's first (recent steps): 0 when independent
    wall_s: float  # from the start until the last step was committed (the drain of samples in flight follows)
    temperature_omitted: bool = False
    k_changes: list[tuple[int, int]] = []  # (step, k) from the first step on: k per stretch of steps
    p_estimate: float | None = None  # p as the committed steps' votes imply it (no ground truth; copies once)
    reliability: float | None = None  # the chance the whole run is error-free at that p and the last k
    red_flag_examples: dict[str, Sample] = {}  # one answer for each red flag reason: what the model said, and why
    cost_usd: float | None = 0.0  # what the samples cost; None when a model's price is unknown
    embedding_tokens: int = 0  # semantic matching: what the embedding calls served (their cost is in cost_usd)
    embedding_cost_usd: float | None = 0.0  # their part of cost_usd; None when the embedding model's price is unknown
    models: dict[str, ModelCounts] = {}  # "provider:model" -> its samples, red flags, share of winning votes
    failure: str | None = None
    failure_detail: str | None = None  # what happened and what to do, when `failure` is a bare reason

    @staticmethod
    def by_reason(stats: dict[str, int]) -> dict[str, int]:
        """Red flags by reason, from the vote script's `red_flag:<reason>` counters."""
        return {name.removeprefix("red_flag:"): n for name, n in stats.items() if name.startswith("red_flag:")}

    @staticmethod
    def fields_from(
        run_id: str, k: int, log: StepLog, stats: dict[str, int], wall_s: float, failure: str | None
    ) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "steps": log.steps,
            "k": k,
            "samples": stats.get("samples", 0),
            "wasted_samples": wasted_samples(stats),
            "votes": stats.get("votes", 0),
            "red_flags": stats.get("red_flags", 0),
            "red_flags_by_reason": RunCounts.by_reason(stats),
            "provider_errors": stats.get("errors", 0),
            "late_votes": stats.get("late_votes", 0),
            "duplicates": stats.get("duplicates", 0),
            "max_rounds": log.max_rounds,
            "votes_per_step": {str(v): n for v, n in sorted(log.votes_per_step.items())},
            "input_tokens": stats.get("input_tokens", 0),
            "output_tokens": stats.get("output_tokens", 0),
            "cached_input_tokens": stats.get("cached_input_tokens", 0),
            "cache_write_input_tokens": stats.get("cache_write_input_tokens", 0),
            "copies": stats.get("copies", 0),
            "copy_share": log.copy_share,
            "wall_s": round(wall_s, 3),
            "temperature_omitted": bool(stats.get("temperature_omitted")),
            "k_changes": log.k_changes,
            "p_estimate": log.p_estimate,
            "reliability": log.reliability,
            "cost_usd": cost_usd(stats),
            "embedding_tokens": stats.get("embedding_tokens", 0),
            "embedding_cost_usd": embedding_cost_usd(stats),
            "models": ModelCounts.from_stats(stats),
            "failure": failure,
        }


class RunReport(RunCounts):
    """A Hanoi run, scored against the optimal sequence."""

    disks: int
    solved: bool
    errors: int

    @classmethod
    def build(
        cls, run_id: str, k: int, scorer: Scorer, stats: dict[str, int], wall_s: float, failure: str | None = None
    ) -> RunReport:
        return cls(
            **cls.fields_from(run_id, k, scorer, stats, wall_s, failure),
            disks=scorer.disks,
            solved=scorer.solved and failure is None,
            errors=scorer.errors,
        )


class TaskReport(RunCounts):
    """Any task's run: how far it got and the state it ended in."""

    task: str
    done: bool
    final_state: JSON
    candidates: dict[int, list[Candidate]] = {}  # semantic matching: each step's meanings and their phrasings
    semantic_rule: MeaningsRule | None = None  # semantic matching: the rule measured on answer.meanings

    @classmethod
    def build(
        cls,
        run_id: str,
        task: str,
        done: bool,
        k: int,
        log: StepLog,
        stats: dict[str, int],
        wall_s: float,
        failure: str | None = None,
    ) -> TaskReport:
        return cls(
            **cls.fields_from(run_id, k, log, stats, wall_s, failure),
            task=task,
            done=done and failure is None,
            final_state=log.last_state,
        )
