"""How many steps ahead to vote: fixed, or adapted to the samples speculation wastes.

A guess is built on a leader that may still lose; when it does, every sample drawn for the steps built on it
is wasted. How many that is depends on the model (its error rate, its latency) and is only known as the run
goes, so the depth is measured, not configured: deeper while little is wasted, shallower when much is.

On a model whose samples cost money, a budget (`WasteBudget`) holds speculation and hedging to a share of the
samples sent; it decides only how many samples go out early, never which answer wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Decay of the waste counters per committed step: they remember about the last 100 steps.
_MEMORY = 0.99
# Steps between two changes of depth: each change is judged on what it did.
_SETTLE = 48
_START = 32


@dataclass
class Depth:
    fixed: int | None  # None: adaptive
    cap: int
    budget: float  # the share of samples it may waste
    depth: int = 0
    _useful: float = 0.0
    _wasted: float = 0.0
    _since_change: int = 0

    def __post_init__(self) -> None:
        self.depth = self.fixed if self.fixed is not None else min(_START, self.cap)

    @property
    def waste(self) -> float:
        """The recent share of samples drawn for contests that were dropped."""
        total = self._useful + self._wasted
        return self._wasted / total if total else 0.0

    def dropped(self, samples: int) -> None:
        """Negative when a dropped guess comes back: what it drew was not wasted after all."""
        self._wasted = max(0.0, self._wasted + samples)

    def committed(self, samples: int) -> None:
        self._useful = self._useful * _MEMORY + samples
        self._wasted *= _MEMORY
        self._since_change += 1
        if self.fixed is not None or self._since_change < _SETTLE:
            return
        if self.waste > self.budget and self.depth > 1:
            self.depth, self._since_change = max(1, self.depth // 2), 0
        elif self.waste < self.budget / 2 and self.depth < self.cap:
            self.depth, self._since_change = min(self.cap, self.depth * 2), 0


# The share of samples speculation may waste on a model whose samples cost money, unless told otherwise.
PRICED_MAX_WASTE = 0.05


@dataclass
class WasteBudget:
    """What speculation may waste, kept at every moment rather than on average.

    Wasted: sent and counted by no committed step (a dropped guess's samples, a hedge or a replacement that
    landed after its step was decided). At risk: sent to guesses not yet on the committed path, and hedges in
    flight; they are wasted if the guess is dropped. A guess is fed, and a hedge sent, only while wasted plus at
    risk stays within `share` of all samples sent, so the run's wasted share never passes it, whatever the model
    does. Sequential voting's own samples are never held back: a step's needed votes always go out.
    """

    given: float | None  # --max-waste; None: PRICED_MAX_WASTE once the run has spent money, else no cap
    priced: bool = False  # the run's samples cost something (a model without a price, or at $0, costs nothing)
    sent: int = 0
    wasted: int = 0

    @property
    def share(self) -> float | None:
        """The cap in force; None: none."""
        if self.given is not None:
            return self.given
        return PRICED_MAX_WASTE if self.priced else None

    def spare(self, at_risk: int) -> float:
        """How many more samples may go out at risk now: inf without a cap."""
        share = self.share
        if share is None or share >= 1:
            return math.inf
        return max(0.0, (share * self.sent - self.wasted - at_risk) / (1 - share))
