"""What the votes say about the model while a run goes, with no ground truth: the share of votes that went
to the winners estimates p, and the formulas turn that into the chance the run is (and stays) error-free.

A step's losing votes are the model's errors on it (the winner is taken to be right), so p ≈ winning votes / all
votes over the last WINDOW committed steps (shown as the run goes), a window so that a model that drifts shows
within a hundred steps rather than being averaged away. The reliability is read at p's posterior mean under a
uniform prior, (winning + 1) / (all + 2) (Laplace's rule), so that a run whose every vote agreed does not claim
certainty from a finite count.

Acting on it (a warning, --adaptive-k) takes evidence, not a point estimate: a larger window (`act_window`: 300
steps, or a thousandth of the run), and the one-sided upper confidence bound on p over it (Wilson's, at
95% over the run's many looks: z for 0.05 / (steps / window), Bonferroni). k is raised only when even that bound is
below the p the target needs at the k in use: the votes then say the model is worse than planned, beyond doubt.
A model at the plan's edge (p = 0.99, k = 4, a million steps, target 0.95) is no longer raised by noise;
benchmarks/estimator.py measures both error rates (docs/planning.md, "Live reliability").

Copies are not votes. A model sampled near T=0 returns the same text again and again: five byte-identical
completions are one observation, not five, and the formulas' independent samples they are not. Each text is
counted once here (the vote script counts a step's `copies` and its winner's distinct texts): in p, and in the
margin a step was really decided by, which the reading uses in place of k when it is smaller. A run whose votes
are mostly copies says so (`alike`): its reading rests on little evidence, and no reading from votes alone can see
a step whose every sample makes the same mistake; calibration against known answers can (`maker calibrate`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

from pydantic import BaseModel

from orchestrator.planning import method
from orchestrator.planning.method import Spread

# Below this much evidence the estimate is too loose to act on (raising k costs every later step).
MIN_STEPS = 30
MIN_VOTES = 100
WINDOW = 100  # steps the shown reading is over
ACT_WINDOW = 300  # steps an action is decided over, at least (a thousandth of a long run)
FALSE_ALARMS = 0.05  # the chance a run whose model is as planned ever has k raised
ALIKE = 0.5  # past this share of copies among a step's later votes, the votes are called alike


class Reading(BaseModel):
    p: float  # estimated chance one valid sample is right, each distinct text counted once
    step_error: float  # chance a step is decided wrong at the margin it is really decided by
    reliability: float  # chance the whole run (steps done and left) is error-free at that margin
    margin: float  # the mean margin in distinct texts, at most k: k itself when no vote was a copy
    copy_share: float  # copies among the votes after each step's first: 0 for independent samples


@dataclass(frozen=True)
class _Step:
    votes: int  # distinct texts among the step's votes
    winning: int  # distinct texts among the winner's votes
    margin: float  # the winner's distinct texts over the runner-up's votes, at most k
    copies: int
    later: int  # votes after the first: where a copy can be


def act_window(total_steps: int | None) -> int:
    """Steps an action is decided over: enough votes to tell a model at the plan's edge from a worse one."""
    return max(ACT_WINDOW, math.ceil((total_steps or 0) / 1000))


def p_needed(k: float, steps: int, target: float) -> float:
    """The least p at which `steps` steps decided ahead-by-k are all right with chance `target`."""
    per_step = target ** (-1.0 / steps) - 1.0  # ((1 - p) / p) ** k
    return 1.0 / (1.0 + per_step ** (1.0 / k))


class LiveReliability:
    def __init__(
        self, window: int = WINDOW, spread: tuple[float, float] | None = None, total_steps: int | None = None
    ) -> None:
        """`spread`: the Beta of per-step p a calibration measured; a step's reading is then never above what it
        allows at the margin in use (a mistake every sample of a step makes is invisible in its votes).
        `total_steps` sizes the act window (act_window); what the estimate holds never grows with the run."""
        self._recent: deque[_Step] = deque(maxlen=window)
        self._act_window = act_window(total_steps)
        self._acting: deque[tuple[int, int]] = deque()  # (distinct votes, winning) of the act window's steps
        self._acting_votes = self._acting_winning = 0
        self._spread = None if spread is None else Spread(*spread)

    def observe(
        self,
        votes: int,
        winning_votes: int,
        *,
        k: int | None = None,
        runner_up_votes: int = 0,
        copies: int = 0,
        winner_distinct: int | None = None,
    ) -> None:
        """One committed step's tally: `copies` of its votes repeated a text already counted, and its winner's
        votes held `winner_distinct` different texts (None: all different)."""
        winning = winning_votes if winner_distinct is None else min(winner_distinct, winning_votes)
        margin = float(winning - runner_up_votes) if k is None else float(min(k, winning - runner_up_votes))
        step = _Step(
            votes=max(votes - copies, winning),
            winning=winning,
            margin=max(margin, 0.0),
            copies=copies,
            later=max(votes - 1, 0),
        )
        self._recent.append(step)
        self._acting.append((step.votes, step.winning))
        self._acting_votes += step.votes
        self._acting_winning += step.winning
        if len(self._acting) > self._act_window:
            votes, winning = self._acting.popleft()
            self._acting_votes -= votes
            self._acting_winning -= winning

    @property
    def steps(self) -> int:
        return len(self._recent)

    @property
    def votes(self) -> int:
        return sum(s.votes for s in self._recent)

    @property
    def p(self) -> float:
        """The share of the window's (distinct) votes that went to the winners."""
        votes = self.votes
        return sum(s.winning for s in self._recent) / votes if votes else 0.0

    @property
    def p_posterior(self) -> float:
        """p's posterior mean under a uniform prior: what the reliability is read at."""
        return (sum(s.winning for s in self._recent) + 1) / (self.votes + 2)

    @property
    def copy_share(self) -> float:
        later = sum(s.later for s in self._recent)
        return sum(s.copies for s in self._recent) / later if later else 0.0

    @property
    def alike(self) -> bool:
        """Whether most votes were copies: the reading then rests on little evidence (see the module's note)."""
        return self.copy_share > ALIKE

    @property
    def enough(self) -> bool:
        return self.steps >= MIN_STEPS and self.votes >= MIN_VOTES

    def margin(self, k: int) -> float:
        """The margin steps are really decided by: k, unless copies made it less."""
        if not self._recent:
            return float(k)
        return min(float(k), sum(s.margin for s in self._recent) / len(self._recent))

    @property
    def informative(self) -> bool:
        """Whether the votes say anything of p: not when every step was decided by its one vote (k=1), which is
        the winner's by definition."""
        return any(s.votes > 1 or s.later > 0 for s in self._recent)

    def reading(self, k: int, total_steps: int | None) -> Reading | None:
        """None while the votes say nothing of p (see `informative`)."""
        if not self.informative:
            return None
        margin = self.margin(k)
        step_ok = method.p_sub(self.p_posterior, margin)
        if self._spread is not None:
            step_ok = min(step_ok, self._spread.step_ok(round(margin, 2)))
        steps = total_steps if total_steps is not None else self.steps
        return Reading(
            p=round(self.p, 6),
            step_error=1.0 - step_ok,
            reliability=step_ok**steps,
            margin=round(margin, 3),
            copy_share=round(self.copy_share, 4),
        )

    def bound(self, total_steps: int | None) -> tuple[float, float, int]:
        """(p over the act window, the one-sided upper bound on it the run may act on, the window's steps)."""
        window = self._act_window
        looks = max(1, math.ceil((total_steps or 1000 * window) / window))
        z = NormalDist().inv_cdf(1 - FALSE_ALARMS / looks)
        votes = max(self._acting_votes, 1)
        _, high = method.wilson(min(self._acting_winning, votes), votes, z)
        return self._acting_winning / votes, high, len(self._acting)

    def k_for(self, target: float, total_steps: int, k: int) -> tuple[int, str] | None:
        """A larger k the votes ask for to reach `target` over the run, and why; None while the upper bound on p
        still allows the target at `k`, while evidence is thin, when the votes are copies (a larger k buys more
        copies, not more evidence), or when the model looks no better than a coin (then no k helps: the run's
        caps will say so)."""
        if not self.enough or not self.informative or self.alike:
            return None
        p, high, steps = self.bound(total_steps)
        needed = p_needed(k, total_steps, target)
        if high >= needed or p <= 0.5:
            return None
        why = (
            f"over the last {steps} steps the votes imply p = {p:.4f}, and its upper confidence bound ({high:.4f}, "
            f"one-sided, 95% over the run's looks) is below the {needed:.4f} that k={k} needs for the target"
        )
        return max(k + 1, method.k_min(p, total_steps, target)), why
