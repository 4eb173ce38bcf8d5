"""The MAKER formulas (Meyerson et al. 2025), with p the chance one valid sample is right.

These plan a run (k, expected cost); the voting itself happens in Redis.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from maker_workers.errors import ConfigError

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
MAX_K = 64  # the largest k a spread plan looks at: past it, more votes change nothing a plan can show
GRID = 20_000  # points of the integral over the Beta of per-step p


def _check_p(p: float) -> None:
    if not 0.5 < p <= 1.0:
        raise ConfigError(f"p (the chance a valid sample is right) must be in (0.5, 1], got {p}")


def p_sub(p: float, k: float) -> float:
    """Chance a step decided ahead-by-k picks the right answer (gambler's ruin, one rival); a mean margin (a real
    k) reads the same way."""
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"p must be in (0, 1], got {p}")
    if p == 1.0:
        return 1.0
    return 1.0 / (1.0 + ((1.0 - p) / p) ** k)


def p_full(p: float, k: int, steps: int) -> float:
    return p_sub(p, k) ** steps


def k_min(p: float, steps: int, target: float) -> int:
    """Smallest k whose whole-run success is at least `target`."""
    _check_p(p)
    if not 0.0 < target < 1.0:
        raise ConfigError(f"target reliability must be in (0, 1), got {target}")
    if p == 1.0:
        return 1
    k = max(1, math.ceil(math.log(target ** (-1.0 / steps) - 1.0) / math.log((1.0 - p) / p)))
    # The closed form can land one off at the boundary through rounding; settle it on p_full itself.
    while k > 1 and p_full(p, k - 1, steps) >= target:
        k -= 1
    while p_full(p, k, steps) < target:
        k += 1
    return k


def expected_votes(p: float, k: int) -> float:
    """Expected counted votes per step: a walk from 0 absorbed at +k or -k (worst case: one rival)."""
    _check_p(p)
    if p == 1.0:
        return float(k)
    r = (1.0 - p) / p
    return k / (2.0 * p - 1.0) * (1.0 - r**k) / (1.0 + r**k)


def expected_samples(p: float, k: int, valid_share: float) -> float:
    """Expected LLM calls per step when only `valid_share` of the answers pass the red flags."""
    if not 0.0 < valid_share <= 1.0:
        raise ConfigError(f"the valid share must be in (0, 1], got {valid_share}")
    return expected_votes(p, k) / valid_share


def to_enqueue(k: int, margin: int, in_flight: int) -> int:
    """How many more samples to send: enough that the leader could win if all go its way.

    Never zero while nothing is in flight, or an undecided step would stall.
    """
    need = max(0, k - margin - in_flight)
    return max(need, 1) if in_flight == 0 else need


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion: sound near 0 and 1, where p lives."""
    share = successes / n
    scale = 1.0 + z * z / n
    centre = (share + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(share * (1.0 - share) / n + z * z / (4 * n * n))
    # Exact arithmetic puts the share inside; floats can land the bound just short of it (40 of 40 gave a high end
    # of 0.9999999999999999, below p = 1.0).
    return max(0.0, min(share, centre - half)), min(1.0, max(share, centre + half))


class Spread:
    """Per-step p as Beta(a, b): what a step decided ahead-by-k is worth when steps differ."""

    def __init__(self, a: float, b: float) -> None:
        import numpy as np  # here, not at import: a run that plans over no spread never loads it (memory, start-up)

        h = 1.0 / GRID
        x = (np.arange(GRID) + 0.5) * h
        log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
        weights = np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - log_beta) * h  # midpoints inside
        # The end cells hold the density's poles (a or b below 1: steps nearly always right, or always wrong): their
        # mass in closed form, h^a / (a B(a, b)), where a midpoint would miss it.
        weights[0] = math.exp(a * math.log(h) - math.log(a) - log_beta)
        weights[-1] = math.exp(b * math.log(h) - math.log(b) - log_beta)
        self._x: Any = x
        self._w: Any = weights / weights.sum()
        self.a, self.b = a, b

    @lru_cache(maxsize=256)  # noqa: B019  # a run reads it once a step, at a few margins; Spreads are few
    def step_ok(self, k: float) -> float:
        """E[p_sub(p_i, k)] over the Beta."""
        x = self._x
        return float((self._w / (1.0 + ((1.0 - x) / x) ** k)).sum())

    @property
    def unfixable(self) -> float:
        return float(self._w[self._x < 0.5].sum())

    def k_min(self, steps: int, target: float) -> int | None:
        """The least k whose whole-run success reaches `target`; None when none up to MAX_K does."""
        return next((k for k in range(1, MAX_K + 1) if self.step_ok(k) ** steps >= target), None)

    def unreachable(self, steps: int, target: float) -> str:
        ceiling = self.step_ok(MAX_K) ** steps
        return (
            f"no k reaches reliability {target} over {steps:,} steps: the calibration found p varying across "
            f"steps (Beta({self.a:.3g}, {self.b:.3g})), with about {self.unfixable:.2%} of steps below 0.5, where "
            "the commonest answer is wrong and more votes only make it surer; the best any k reaches is "
            f"{ceiling:.3g}. Raise the later temperature, give the spec prompt variants, use an ensemble, or split "
            "the step, then calibrate again"
        )
