"""How many steps ahead to vote: fixed, or adapted to the samples speculation wastes.

A guess is built on a leader that may still lose; when it does, every sample drawn for the steps built on it
is wasted. How many that is depends on the model (its error rate, its latency) and is only known as the run
goes, so the depth is measured, not configured: deeper while little is wasted, shallower when much is.
"""

from __future__ import annotations

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
