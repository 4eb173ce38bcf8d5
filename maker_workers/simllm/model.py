"""How the simulated model answers one prompt of any task it has an oracle for (`simllm.oracles`).

Of the well-formed answers a share `error_rate` is wrong (so p = 1 - error_rate among valid ones).
Wrong answers mostly repeat the step's one plausible mistake (collisions); now and then the right
core comes with a corrupted secondary field (Hanoi: right move, wrong next_state); the rest are other
wrong answers. Separately, small shares of answers are malformed or over-long (red flags). At
temperature 0 the answer to a prompt is a pure function of (seed, prompt); above it, draws come from
the server's seeded generator. The error mix lives here, once for every task; what a right, mistaken,
corrupt or malformed answer looks like is the oracle's.

Shapes a real model has, each off by default (so answers stay what they were) and set by the profiles of
`simllm.profiles`: answers padded with reasoning prose to a drawn length, more often wrong past 700 tokens;
steps of varying difficulty; latency with a floor and a lognormal tail.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from maker_workers.simllm.oracles import Problem, read_prompt
from maker_workers.simllm.oracles.triage import TriageProblem
from maker_workers.simllm.profiles import PROFILES

LENGTH_KNEE_TOKENS = 700
"""The paper: the error rate rises sharply once an answer passes about 700 tokens."""
FIGURE_TOKENS = 750
"""The paper's red flag: a profile's error figure holds among answers no longer than this."""


class SimConfig(BaseModel):
    error_rate: float = Field(0.01, ge=0.0, lt=0.5, description="share of well-formed answers that are wrong")
    collision_share: float = Field(0.8, ge=0.0, le=1.0, description="of wrong answers: the step's plausible one")
    corrupt_share: float = Field(0.1, ge=0.0, le=1.0, description="of wrong answers: right core, corrupt detail")
    malformed_rate: float = Field(0.01, ge=0.0, lt=1.0)
    too_long_rate: float = Field(0.005, ge=0.0, lt=1.0)
    revised_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of well-formed answers written after a wrong draft (the last counts)"
    )
    latency_ms: float = Field(0.0, ge=0.0, description="mean of the response latency's tail, over the floor")
    seed: int = 0
    profile: str | None = Field(None, description="start from a measured model's values (simllm.profiles)")
    # Shapes of a real model; each default leaves the answers as they were without it.
    output_tokens: float = Field(0.0, ge=0.0, description="mean answer length, padded with prose; 0: unpadded")
    output_tokens_sigma: float = Field(0.25, ge=0.0, description="the answer length's lognormal sigma")
    length_error_slope: float = Field(
        0.0, ge=0.0, description="each 100 tokens past 700 add this share of error_rate (normalised: see model)"
    )
    hard_step_share: float = Field(0.0, ge=0.0, lt=1.0, description="share of steps that are hard")
    hard_step_max: float = Field(
        1.0, ge=1.0, description="a hard step's error is error_rate times U[1, this]; the rest are easier"
    )
    latency_floor_ms: float = Field(0.0, ge=0.0, description="every answer takes this long at least")
    latency_sigma: float = Field(0.0, ge=0.0, description="0: exponential latency tail; above: lognormal, this sigma")
    latency_scale: float = Field(1.0, ge=0.0, description="multiplies the latency (floor and tail)")
    # Faults on demand, for the provider layer and the engine's retries. One draw per request picks at
    # most one of the rate_ faults, in this order; where they add up past 1, the later ones get the rest.
    rate_429: float = Field(0.0, ge=0.0, le=1.0, description="share of requests answered 429 with a Retry-After")
    retry_after_s: float = Field(1.0, ge=0.0, description="the Retry-After of those 429s")
    rate_500: float = Field(0.0, ge=0.0, le=1.0, description="share of requests answered 500")
    rate_timeout: float = Field(0.0, ge=0.0, le=1.0, description="share held timeout_hold_s, then hung up on")
    timeout_hold_s: float = Field(30.0, ge=0.0, description="how long a request picked to time out is held")
    rate_refusal: float = Field(0.0, ge=0.0, le=1.0, description="share answered 200 with a polite refusal")
    api_key: str | None = Field(None, description="when set, a request with any other key gets 401")
    deceptive: bool = Field(
        False, description="triage: wrong answers give the right reason under a wrong queue (close in meaning)"
    )
    quota_exhausted: bool = Field(False, description="every request gets 429 insufficient_quota")

    @model_validator(mode="before")
    @classmethod
    def _start_from_profile(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("profile") in PROFILES:
            return PROFILES[data["profile"]] | data  # what is given overrides the profile
        return data

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str | None) -> str | None:
        if name is not None and name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
        return name

    @field_validator("hard_step_max")
    @classmethod
    def _easy_steps_remain(cls, top: float, info: ValidationInfo) -> float:
        share = info.data.get("hard_step_share", 0.0)
        if share * (1 + top) / 2 > 1:
            raise ValueError("hard steps alone would exceed the mean error: lower hard_step_share or this")
        return top


class Answer(BaseModel):
    text: str
    output_tokens: int
    truncated: bool


def count_tokens(text: str) -> int:
    """About four characters a token, as the usual rule of thumb for English."""
    return max(1, math.ceil(len(text) / 4))


class SimModel:
    def __init__(self, config: SimConfig, stream: str = "") -> None:
        """`stream` sets apart the draws above T=0 of models that share a seed: every worker process serving the
        sim in process has its own, or their n-th answers to one prompt would be the same (correlated votes)."""
        self.config = config
        self._rng = random.Random(f"{config.seed}/{stream}" if stream else config.seed)
        self._lock = threading.Lock()
        self._length_norm = _length_norm(config)

    def _rng_for(self, prompt: str, temperature: float) -> random.Random:
        if temperature == 0.0:
            digest = hashlib.sha256(f"{self.config.seed}\n{prompt}".encode()).digest()
            return random.Random(int.from_bytes(digest[:8], "big"))
        with self._lock:
            return random.Random(self._rng.getrandbits(64))

    def latency_s(self) -> float:
        """One answer's latency in seconds: the floor plus a tail (exponential, or lognormal), times the scale."""
        cfg = self.config
        tail_s = 0.0
        if cfg.latency_ms > 0:
            with self._lock:
                if cfg.latency_sigma > 0:
                    mu = math.log(cfg.latency_ms) - cfg.latency_sigma**2 / 2  # so that the tail's mean is latency_ms
                    tail_s = self._rng.lognormvariate(mu, cfg.latency_sigma) / 1000.0
                else:
                    tail_s = self._rng.expovariate(1000.0 / cfg.latency_ms)
        return (cfg.latency_floor_ms / 1000.0 + tail_s) * cfg.latency_scale

    def difficulty(self, prompt: str) -> float:
        """The step's error multiplier, a pure function of (seed, prompt), with mean 1 over steps: a share
        hard_step_share of them draw it uniform in [1, hard_step_max], the rest share what is left."""
        share, top = self.config.hard_step_share, self.config.hard_step_max
        if share == 0:
            return 1.0
        digest = hashlib.sha256(f"{self.config.seed}\ndifficulty\n{prompt}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        if u < share:
            return 1 + (top - 1) * u / share
        return (1 - share * (1 + top) / 2) / (1 - share)

    def error_rate(self, prompt: str, tokens: int) -> float:
        """The chance that a well-formed answer to `prompt`, `tokens` long (0: unpadded), is wrong."""
        cfg = self.config
        if not cfg.hard_step_share and not (tokens and cfg.length_error_slope):
            return cfg.error_rate
        length = _length_factor(tokens, cfg.length_error_slope) / self._length_norm if tokens else 1.0
        return min(1.0, cfg.error_rate * self.difficulty(prompt) * length)

    def answer(self, prompt: str, temperature: float, max_tokens: int | None) -> Answer:
        """Raises ValueError (HTTP 400) for a prompt no oracle recognises."""
        problem = read_prompt(prompt)
        if self.config.deceptive and isinstance(problem, TriageProblem):
            problem.deceptive = True
        rng = self._rng_for(prompt, temperature)
        cfg = self.config
        right = problem.right(rng)
        roll = rng.random()
        length = self._draw_length(rng) if cfg.output_tokens else 0  # draws only when asked, like revised_rate
        if roll < cfg.malformed_rate:
            text = problem.malformed(right, rng)
        elif roll < cfg.malformed_rate + cfg.too_long_rate:
            text = problem.filler * 90 + problem.render(right)
        else:
            given = self._wrong(problem, right, rng) if rng.random() < self.error_rate(prompt, length) else right
            text = problem.render(given)
            if cfg.revised_rate and rng.random() < cfg.revised_rate:  # draws only when asked: answers stay as they were
                draft = problem.mistake() or problem.other(right, None, rng)
                text = f"{problem.render(draft)}\nWait, that is not right. Corrected:\n{text}"
            if temperature > 0:  # drawn last: every draw above is what it was without it
                text = f"{musing(rng)}\n{text}"
        if length:
            text = _padded(text, problem.filler, length)
        tokens = count_tokens(text)
        if max_tokens is not None and tokens > max_tokens:
            return Answer(text=text[: 4 * max_tokens], output_tokens=max_tokens, truncated=True)
        return Answer(text=text, output_tokens=tokens, truncated=False)

    def _draw_length(self, rng: random.Random) -> int:
        cfg = self.config
        mu = math.log(cfg.output_tokens) - cfg.output_tokens_sigma**2 / 2  # so that the mean is output_tokens
        return max(1, round(rng.lognormvariate(mu, cfg.output_tokens_sigma)))

    def _wrong(self, problem: Problem[Any], right: Any, rng: random.Random) -> Any:
        mistake = problem.mistake()
        if mistake is None:  # no step-specific mistake here (a broken input): any wrong answer
            return problem.other(right, None, rng)
        kind = rng.random()
        if kind < self.config.collision_share:
            return mistake
        if kind < self.config.collision_share + self.config.corrupt_share:
            return problem.corrupt(right)
        return problem.other(right, mistake, rng)


MUSINGS = (
    ("Let me", "I will", "Time to", "Now I", "First I", "Here I", "So I", "Okay, I"),
    ("check", "work out", "go over", "think through", "look at", "read", "reason about", "settle"),
    ("this step", "the problem", "the input", "what is asked", "the rules", "the current state", "it", "the task"),
    ("carefully.", "once more.", "step by step.", "slowly.", "in order.", "with care.", "briefly.", "again."),
)


def musing(rng: random.Random) -> str:
    """A line of prose worded at random, as a real model's wording varies from draw to draw above T=0 (4,096 ways):
    two right answers are then seldom the same text, while at T=0 they are (copies;
    orchestrator/planning/reliability.py)."""
    return " ".join(rng.choice(words) for words in MUSINGS)


def _length_factor(tokens: int, slope: float) -> float:
    return 1 + slope * max(0, tokens - LENGTH_KNEE_TOKENS) / 100


def _length_norm(cfg: SimConfig) -> float:
    """The mean length factor among answers of at most FIGURE_TOKENS (closed form for the lognormal), so
    that error_rate is the error rate among the answers a 750-token red flag keeps."""
    if not cfg.output_tokens or not cfg.length_error_slope:
        return 1.0
    sigma, mean = cfg.output_tokens_sigma, cfg.output_tokens
    if sigma == 0:
        return _length_factor(round(mean), cfg.length_error_slope)
    mu = math.log(mean) - sigma**2 / 2

    def below(x: float, shift: float = 0.0) -> float:  # P(ln n <= ln x) under the (shifted) normal
        return 0.5 * (1 + math.erf((math.log(x) - mu - shift) / (sigma * math.sqrt(2))))

    knee, top = LENGTH_KNEE_TOKENS, FIGURE_TOKENS
    kept = below(top)
    if kept < 1e-12:
        return _length_factor(top, cfg.length_error_slope)
    # E[(n - knee) over knee < n <= top] = mean * P'(knee < n <= top) - knee * P(knee < n <= top),
    # P' being the size-biased distribution (the normal shifted by sigma^2).
    past_knee = mean * (below(top, sigma**2) - below(knee, sigma**2)) - knee * (below(top) - below(knee))
    return 1 + cfg.length_error_slope * past_knee / 100 / kept


def _padded(text: str, filler: str, tokens: int) -> str:
    """`text` after reasoning prose, `tokens` tokens in all (never shorter than `text`). The prose comes
    first, and holds no answer field, so the answer's last fields still count."""
    room = 4 * tokens - len(text) - 1
    if room < len(filler):
        return text
    prose = (filler * (room // len(filler) + 1))[:room]
    return prose[: prose.rfind(" ")].ljust(room) + "\n" + text
