"""The live estimate's two error rates, measured offline over many simulated runs (docs/planning.md).

    .venv/bin/python benchmarks/estimator.py                 # 40 runs of each, a million steps, about a minute
    .venv/bin/python benchmarks/estimator.py --runs 200 --json

A run of 1,048,575 steps at k=4 planned from p = 0.99 for a target of 0.95 sits at the plan's edge: the p the target
needs at k=4 is 0.9852. Each step is voted ahead-by-4 among independent samples (one rival, as the formulas
assume); the rule of orchestrator/planning/reliability.py (`LiveReliability.k_for`: the one-sided upper Wilson
bound over
the act window, at 95% over the run's looks) is applied after every step, vectorised here with its own constants.
It reports how many stationary runs (p = 0.99 throughout) would have had k raised, which should be at most 5%, and
how soon a drift from 0.99 to 0.97 halfway is caught.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from statistics import NormalDist

import numpy as np

from orchestrator.planning.reliability import FALSE_ALARMS, MIN_STEPS, MIN_VOTES, act_window, p_needed

STEPS, K, TARGET, PLANNED = 1_048_575, 4, 0.95, 0.99


def votes(p: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each step's votes and its winner's votes, voted ahead-by-k at that step's p."""
    n = len(p)
    right = np.zeros(n, np.int32)
    wrong = np.zeros(n, np.int32)
    going = np.arange(n)
    while going.size:
        hit = rng.random(going.size) < p[going]
        right[going] += hit
        wrong[going] += ~hit
        margin = right[going] - wrong[going]
        going = going[np.abs(margin) < k]
    return right + wrong, np.where(right > wrong, right, wrong)


def first_raise(cast: np.ndarray, won: np.ndarray, steps: int) -> int | None:
    """The first step after which the rule would raise k, or None."""
    window = act_window(steps)
    looks = max(1, math.ceil(steps / window))
    z = NormalDist().inv_cdf(1 - FALSE_ALARMS / looks)
    c_cast = np.concatenate(([0], np.cumsum(cast, dtype=np.int64)))
    c_won = np.concatenate(([0], np.cumsum(won, dtype=np.int64)))
    idx = np.arange(1, len(cast) + 1)
    start = np.maximum(0, idx - window)
    n = (c_cast[idx] - c_cast[start]).astype(float)
    share = (c_won[idx] - c_won[start]) / np.maximum(n, 1)
    scale = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / scale
    high = np.maximum(share, centre + z / scale * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)))
    raise_at = (idx >= MIN_STEPS) & (c_cast[idx] >= MIN_VOTES) & (high < p_needed(K, steps, TARGET)) & (share > 0.5)
    found = np.flatnonzero(raise_at)
    return int(found[0]) if found.size else None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="simulated runs of each kind")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.runs < 1 or args.steps < 100:
        parser.error("--runs must be at least 1 and --steps at least 100")
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    half = args.steps // 2
    raised, delays, missed = 0, [], 0
    for _ in range(args.runs):
        steady = np.full(args.steps, PLANNED)
        raised += first_raise(*votes(steady, K, rng), args.steps) is not None
        drift = steady.copy()
        drift[half:] = 0.97
        at = first_raise(*votes(drift, K, rng), args.steps)
        if at is None or at < half:
            missed += at is None
            raised += at is not None  # raised before the drift: a false alarm too
        else:
            delays.append(at - half)
    figures = {
        "runs": args.runs,
        "steps": args.steps,
        "k": K,
        "target": TARGET,
        "p_needed": round(p_needed(K, args.steps, TARGET), 6),
        "act_window": act_window(args.steps),
        "false_raise_rate": round(raised / (2 * args.runs), 4),
        "drift_missed": missed,
        "drift_caught_after_steps_median": float(np.median(delays)) if delays else None,
        "drift_caught_after_steps_max": int(max(delays)) if delays else None,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"stationary at p={PLANNED} (and drifting runs before their drift), k={K}, {args.steps:,} steps, "
        f"target {TARGET}: k raised in {figures['false_raise_rate']:.1%} of runs"
    )
    print(
        f"drift to 0.97 halfway: caught after a median {figures['drift_caught_after_steps_median']} steps "
        f"(at most {figures['drift_caught_after_steps_max']}), missed in {missed} of {args.runs} runs"
    )
    print(f"p needed at k={K}: {figures['p_needed']}, act window {figures['act_window']} steps, {figures['wall_s']} s")


if __name__ == "__main__":
    main()
