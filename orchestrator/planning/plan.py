"""Plan a run before paying for it: k, reliability, samples, cost and wall time from p (and a calibration).

The MAKER formulas are orchestrator/planning/method.py's; this adds what a plan needs around them: a cost per
sample, a wall-time model, the pessimistic end of a calibrated p, and p's spread across steps.

Spread. The formulas assume one p for every step. A calibration with several samples a step measures how p varies
(calibrate.Spread: a Beta(a, b) of per-step p); then a step decided ahead-by-k is right with chance
E[p_sub(p_i, k)] over that Beta, which no k lifts above P(p_i > 1/2): a step whose commonest answer is wrong only
gets surer of it with more votes. The plan says so, and what the best k could reach.

Wall time. A step cannot start before the step before it has an answer, so a run takes steps x (the time
one step's voting takes). The run loop sends k samples at once, then, once they are in, k - margin more,
until one answer leads by k: a round per batch, each waiting one round latency L (its slowest call). While
the right answer leads, a batch's samples each call for 0 more (right), 1 (a red flag) or 2 (a wrong vote:
the margin fell by one) in the next batch, with probabilities pv, 1 - v and v(1 - p): a Galton-Watson
process started from k, whose expected generations until none is left are the expected rounds,

    R = sum over g >= 0 of (1 - q_g^k),   q_0 = 0,  q_(g+1) = pv + (1 - v) q_g + v (1 - p) q_g^2

(its expected total, k / (v (2p - 1)), is the paper's cost estimate; simulated batches agree with R within
1% from p = 0.6 to 0.998). The loop really tops up as each sample lands, not per batch, which can only end
a step sooner. With at most C samples in flight a step also needs its samples / C rounds, so
wall = steps x L x max(R, expected samples per step / C). Speculation is not modelled.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ValidationError

from maker_workers.errors import ConfigError
from orchestrator.planning.calibrate import Calibration
from orchestrator.planning.method import MAX_K, Spread, expected_samples, expected_votes, k_min, p_sub

MAX_GENERATIONS = 1_000_000  # of the wall-time model's sum; only p within about 1e-5 of 1/2 gets this far


class Plan(BaseModel):
    """What a run of `steps` steps needs to be all right with chance `target`, by the MAKER formulas."""

    p: float  # the chance one valid sample is right
    valid_rate: float  # the share of samples that pass the red flags
    steps: int
    target: float
    k_min: int
    p_step: float  # chance one step decided ahead-by-k_min is right
    p_full: float  # chance all steps are, at k_min
    expected_votes_per_step: float
    expected_samples_per_step: float
    expected_samples: float  # over the whole run
    expected_rounds_per_step: float  # latency rounds a step waits (see the module's wall-time model)
    cost_per_sample_usd: float | None = None
    projected_cost_usd: float | None = None
    projected_wall_s: float | None = None
    pessimistic: Plan | None = None  # the same plan at the low end of a calibrated p's 95% interval
    spread: tuple[float, float] | None = None  # p across steps as Beta(a, b), when the calibration measured it
    unfixable_share: float | None = None  # with a spread: the share of steps whose p is below 1/2 (no k fixes them)
    ceiling: float | None = None  # with a spread: the most p_full any k reaches over the steps


def sample_cost_usd(
    price_in: float,
    price_out: float,
    tokens_in: float,
    tokens_out: float,
    *,
    price_cached: float | None = None,
    cached_share: float = 0.0,
) -> float:
    """One sample's cost from $ per million tokens and its (mean) tokens, of which `cached_share` are read from the
    provider's prompt cache at `price_cached` (None: the input price). A run sends one system prompt to every sample,
    so the share is large for a long prompt: a calibration measures it (`Calibration.cached_share`). Cache writes
    are left out: a run writes its prompt once per cache lifetime, and reads it thousands of times."""
    if not 0.0 <= cached_share <= 1.0:
        raise ConfigError(f"the cached share is of the input tokens, in [0, 1]; got {cached_share}")
    read = price_in if price_cached is None else price_cached
    return (tokens_in * ((1.0 - cached_share) * price_in + cached_share * read) + tokens_out * price_out) / 1e6


def expected_rounds(p: float, k: int, valid_rate: float) -> float:
    """Latency rounds one step waits for: the module's branching process, generation by generation."""
    b = (1.0 - valid_rate) + 2.0 * valid_rate * (1.0 - p)  # replacements per sample: < 1 for p > 1/2
    c = valid_rate * (1.0 - p)
    # e = 1 - q_g, the chance one sample's line of replacements lives on (kept as e: q_g rounds to 1 too soon)
    e, rounds = 1.0, 0.0
    for _ in range(MAX_GENERATIONS):
        alive = 1.0 if e >= 1.0 else -math.expm1(k * math.log1p(-e))  # 1 - q_g^k
        if alive < 1e-9:
            break
        rounds += alive
        e *= b - c * e
    # What is left shrinks by at most b a generation: bound it by a geometric series.
    return rounds + alive / (1.0 - b)


def plan(
    p: float,
    steps: int,
    target: float,
    *,
    valid_rate: float = 1.0,
    cost_per_sample_usd: float | None = None,
    latency_s: float | None = None,
    concurrency: int | None = None,
    p_low: float | None = None,
    spread: tuple[float, float] | None = None,
) -> Plan:
    """The plan at p; with `p_low` (a calibration's pessimistic p, above 1/2) the plan at p_low too; with `spread`
    (a calibration's Beta of per-step p) k and reliability over that spread, not one p. Bad input raises
    ConfigError naming it; a target no k reaches (steps whose commonest answer is wrong) too, saying why."""
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if latency_s is not None and latency_s < 0:
        raise ConfigError(f"the latency must be at least 0 s, got {latency_s}")
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"the concurrency must be at least 1, got {concurrency}")
    k = k_min(p, steps, target)  # checks p and target
    p_step, unfixable, ceiling = p_sub(p, k), None, None
    if spread is not None:
        over = Spread(*spread)
        found = over.k_min(steps, target)
        if found is None:
            raise ConfigError(over.unreachable(steps, target))
        k, p_step = found, over.step_ok(found)
        unfixable, ceiling = over.unfixable, over.step_ok(MAX_K) ** steps
    per_step = expected_samples(p, k, valid_rate)  # checks the valid rate
    total = per_step * steps
    rounds = expected_rounds(p, k, valid_rate)
    wall = None
    if latency_s is not None:
        wall = steps * latency_s * max(rounds, per_step / concurrency if concurrency else 0.0)
    pessimistic = None
    if p_low is not None:
        pessimistic = plan(
            p_low,
            steps,
            target,
            valid_rate=valid_rate,
            cost_per_sample_usd=cost_per_sample_usd,
            latency_s=latency_s,
            concurrency=concurrency,
        )
    return Plan(
        p=p,
        valid_rate=valid_rate,
        steps=steps,
        target=target,
        k_min=k,
        p_step=p_step,
        p_full=p_step**steps,
        expected_votes_per_step=expected_votes(p, k),
        expected_samples_per_step=per_step,
        expected_samples=total,
        expected_rounds_per_step=rounds,
        cost_per_sample_usd=cost_per_sample_usd,
        projected_cost_usd=None if cost_per_sample_usd is None else cost_per_sample_usd * total,
        projected_wall_s=wall,
        pessimistic=pessimistic,
        spread=spread,
        unfixable_share=unfixable,
        ceiling=ceiling,
    )


def load_calibration(path: Path) -> Calibration:
    """A `maker calibrate --out` file; one that cannot be read or is not a calibration is a ConfigError."""
    try:
        return Calibration.model_validate_json(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--from-calibration: cannot read {path}: {exc.strerror}") from exc
    except ValidationError as exc:
        wrong = ", ".join(".".join(map(str, e["loc"])) or e["msg"] for e in exc.errors()[:3])
        raise ConfigError(f"--from-calibration: {path} is not a `maker calibrate --out` file ({wrong})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--from-calibration: {path} is not a `maker calibrate --out` file (not text)") from exc


def calibrated_p(calibration: Calibration, path: Path) -> tuple[float, float]:
    """A calibration's p and the low end of its interval; one with no valid answer plans nothing."""
    if calibration.p is None or calibration.p_low is None:
        raise ConfigError(f"--from-calibration: {path} holds no valid answer, so no p: calibrate again")
    return calibration.p, calibration.p_low


def spread_of(calibration: Calibration) -> tuple[float, float] | None:
    """The Beta of per-step p a calibration with several samples a step measured; None without one."""
    at = calibration.spread
    if at is None or at.beta_a is None or at.beta_b is None:
        return None
    if not (at.beta_a > 0 and at.beta_b > 0):
        raise ConfigError(f"the calibration's spread is Beta({at.beta_a}, {at.beta_b}): both must be above 0")
    return at.beta_a, at.beta_b


def target_k(
    target: float | None, steps: int | None, *, p: float | None, calibration: Path | None, k: int | None
) -> tuple[int, str] | None:
    """The k `--target-reliability` picks, k_min(p, steps, target), and a line saying how; None without a
    target. From a calibration it takes the low end of p's interval: the k that holds if p is that bad."""
    if target is None:
        if p is not None or calibration is not None:
            raise ConfigError("--p and --from-calibration choose k with --target-reliability T: give it too")
        return None
    if k is not None:
        raise ConfigError("give --k or --target-reliability, not both: the target picks k")
    if (p is None) == (calibration is None):
        raise ConfigError("--target-reliability needs exactly one of --p P or --from-calibration FILE")
    if steps is None:
        raise ConfigError(
            "--target-reliability needs the task's number of steps: give the spec `done: steps: N` (or a "
            "`max_steps` with `done: when`), or --k"
        )
    source = f"p={p}"
    if calibration is not None:
        calibrated = load_calibration(calibration)
        beta = spread_of(calibrated)
        if beta is not None:
            over = Spread(*beta)
            found = over.k_min(steps, target)
            if found is None:
                raise ConfigError(f"--from-calibration {calibration}: {over.unreachable(steps, target)}")
            return found, (
                f"k={found}: the least k for reliability {target} over {steps} steps at p's spread across steps in "
                f"{calibration} (Beta({beta[0]:.3g}, {beta[1]:.3g}))"
            )
        _, p = calibrated_p(calibrated, calibration)
        if p <= 0.5:
            raise ConfigError(
                f"--from-calibration: the low end of p's interval in {calibration} is {p:.4f}, not above 0.5: "
                "calibrate with more samples"
            )
        source = f"p={p:.4f}, the low end of {calibration}'s 95% interval"
    assert p is not None  # exactly one of the two was given
    chosen = k_min(p, steps, target)
    return chosen, f"k={chosen}: the least k for reliability {target} over {steps} steps at {source}"
