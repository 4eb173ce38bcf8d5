"""The run loop's reliability policy: what the committed steps' votes imply, warnings when the run would miss its
target or its votes are copies, and the k that --adaptive-k raises to (never lowered).

The reading itself is planning/reliability.py's; this decides what the run does about it, once a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.planning.reliability import LiveReliability

if TYPE_CHECKING:
    from orchestrator.engine.runner import CommittedStep

ALIKE_STEPS = 5  # steps committed before copies are worth a warning


class ReliabilityWatch:
    def __init__(
        self,
        live: LiveReliability,
        target: float | None,
        adaptive_k: bool,
        total_steps: int | None,
        on_warning: Callable[[str], None],
    ) -> None:
        self.live = live
        self._target, self._adaptive, self._total = target, adaptive_k, total_steps
        self._on_warning = on_warning
        self._warned_drift = self._warned_alike = False

    def observe(self, committed: CommittedStep, k: int) -> int | None:
        """Reads the step into the estimate and fills its reading in; the k to raise to (with --adaptive-k) when
        the run would no longer meet its target at `k`, the k contests are opened with now."""
        self.live.observe(
            committed.votes,
            committed.winner_votes,
            k=committed.k,
            runner_up_votes=committed.runner_up_votes,
            copies=committed.copies,
            winner_distinct=committed.winner_distinct,
        )
        reading = self.live.reading(committed.k, self._total)
        if reading is None:  # one vote a step: the votes say nothing of p
            return None
        committed.p_estimate, committed.reliability = reading.p, reading.reliability
        committed.copy_share = reading.copy_share
        if self.live.alike and self.live.steps >= ALIKE_STEPS and not self._warned_alike:
            self._warned_alike = True
            self._on_warning(
                f"the votes are copies: {reading.copy_share:.0%} of the votes after each step's first repeat an "
                "answer's text byte for byte (a model sampled near T=0 repeats itself, right or wrong). Each text "
                f"counts once in the reading (p≈{reading.p:.3f}, margin {reading.margin:.1f} of k={committed.k}), "
                "and no reading from votes can see a mistake every sample makes: raise the later temperature, give "
                "the spec prompt variants, use an ensemble, and check the model with `maker calibrate`"
            )
        target, total = self._target, self._total
        asked = None if target is None or total is None else self.live.k_for(target, total, k)
        if asked is None:
            return None
        needed, why = asked
        drift = f"{why}: the run would fall below the target {target}"
        if self._adaptive:
            self._on_warning(f"{drift}; k raised to {needed} for the remaining steps")
            return needed
        if not self._warned_drift:
            self._warned_drift = True
            self._on_warning(f"{drift}; k={needed} would meet it (--adaptive-k raises k as the run goes)")
        return None
