"""What the votes say about the model while a run goes, with no ground truth: the share of votes that went
to the winners estimates p, and the formulas turn that into the chance the run is (and stays) error-free.

A step's losing votes are the model's errors on it (the winner is taken to be right), so
p ≈ (winning votes + 1) / (all votes + 2) over the last WINDOW committed steps: Laplace's rule, so that a
run whose every vote agreed does not claim p = 1, over a window, so that a model that drifts (a harder
stretch of the task, a provider's bad hour) shows within a hundred steps rather than being averaged away.
"""

from __future__ import annotations

from collections import deque

from pydantic import BaseModel

from orchestrator import method

# Below this much evidence the estimate is too loose to act on (raising k costs every later step).
MIN_STEPS = 30
MIN_VOTES = 100
WINDOW = 100


class Reading(BaseModel):
    p: float  # estimated chance one valid sample is right
    step_error: float  # chance a step is decided wrong at the k in use
    reliability: float  # chance the whole run (steps done and left) is error-free at that k


class LiveReliability:
    def __init__(self, window: int = WINDOW) -> None:
        self._recent: deque[tuple[int, int]] = deque(maxlen=window)
        self.steps = 0  # in the window
        self.votes = 0
        self.winning_votes = 0

    def observe(self, votes: int, winning_votes: int) -> None:
        if len(self._recent) == self._recent.maxlen:
            old_votes, old_winning = self._recent[0]
            self.votes -= old_votes
            self.winning_votes -= old_winning
            self.steps -= 1
        self._recent.append((votes, winning_votes))
        self.steps += 1
        self.votes += votes
        self.winning_votes += winning_votes

    @property
    def p(self) -> float:
        return (self.winning_votes + 1) / (self.votes + 2)

    @property
    def enough(self) -> bool:
        return self.steps >= MIN_STEPS and self.votes >= MIN_VOTES

    def reading(self, k: int, total_steps: int | None) -> Reading:
        step_ok = method.p_sub(self.p, k)
        steps = total_steps if total_steps is not None else self.steps
        return Reading(p=round(self.p, 6), step_error=1.0 - step_ok, reliability=step_ok**steps)

    def k_for(self, target: float, total_steps: int) -> int | None:
        """The k the estimate asks for to reach `target` over the run; None while evidence is thin or the
        model looks no better than a coin (then no k helps: the run's caps will say so)."""
        if not self.enough or self.p <= 0.5:
            return None
        return method.k_min(self.p, total_steps, target)
