"""How the simulated model answers one prompt of any task it has an oracle for (`simllm.oracles`).

Of the well-formed answers a share `error_rate` is wrong (so p = 1 - error_rate among valid ones).
Wrong answers mostly repeat the step's one plausible mistake (collisions); now and then the right
core comes with a corrupted secondary field (Hanoi: right move, wrong next_state); the rest are other
wrong answers. Separately, small shares of answers are malformed or over-long (red flags). At
temperature 0 the answer to a prompt is a pure function of (seed, prompt); above it, draws come from
the server's seeded generator. The error mix lives here, once for every task; what a right, mistaken,
corrupt or malformed answer looks like is the oracle's.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from typing import Any

from pydantic import BaseModel, Field

from maker_workers.simllm.oracles import Problem, read_prompt


class SimConfig(BaseModel):
    error_rate: float = Field(0.01, ge=0.0, lt=0.5, description="share of well-formed answers that are wrong")
    collision_share: float = Field(0.8, ge=0.0, le=1.0, description="of wrong answers: the step's plausible one")
    corrupt_share: float = Field(0.1, ge=0.0, le=1.0, description="of wrong answers: right core, corrupt detail")
    malformed_rate: float = Field(0.01, ge=0.0, lt=1.0)
    too_long_rate: float = Field(0.005, ge=0.0, lt=1.0)
    revised_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of well-formed answers written after a wrong draft (the last counts)"
    )
    latency_ms: float = Field(0.0, ge=0.0, description="mean of the exponential response latency")
    seed: int = 0
    # Faults on demand, for the provider layer and the engine's retries. One draw per request picks at
    # most one of the rate_ faults, in this order; where they add up past 1, the later ones get the rest.
    rate_429: float = Field(0.0, ge=0.0, le=1.0, description="share of requests answered 429 with a Retry-After")
    retry_after_s: float = Field(1.0, ge=0.0, description="the Retry-After of those 429s")
    rate_500: float = Field(0.0, ge=0.0, le=1.0, description="share of requests answered 500")
    rate_timeout: float = Field(0.0, ge=0.0, le=1.0, description="share held timeout_hold_s, then hung up on")
    timeout_hold_s: float = Field(30.0, ge=0.0, description="how long a request picked to time out is held")
    rate_refusal: float = Field(0.0, ge=0.0, le=1.0, description="share answered 200 with a polite refusal")
    api_key: str | None = Field(None, description="when set, a request with any other key gets 401")
    quota_exhausted: bool = Field(False, description="every request gets 429 insufficient_quota")


class Answer(BaseModel):
    text: str
    output_tokens: int
    truncated: bool


def count_tokens(text: str) -> int:
    """About four characters a token, as the usual rule of thumb for English."""
    return max(1, math.ceil(len(text) / 4))


class SimModel:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()

    def _rng_for(self, prompt: str, temperature: float) -> random.Random:
        if temperature == 0.0:
            digest = hashlib.sha256(f"{self.config.seed}\n{prompt}".encode()).digest()
            return random.Random(int.from_bytes(digest[:8], "big"))
        with self._lock:
            return random.Random(self._rng.getrandbits(64))

    def latency_s(self) -> float:
        if self.config.latency_ms <= 0:
            return 0.0
        with self._lock:
            return self._rng.expovariate(1000.0 / self.config.latency_ms)

    def answer(self, prompt: str, temperature: float, max_tokens: int | None) -> Answer:
        """Raises ValueError (HTTP 400) for a prompt no oracle recognises."""
        problem = read_prompt(prompt)
        rng = self._rng_for(prompt, temperature)
        cfg = self.config
        right = problem.right(rng)
        roll = rng.random()
        if roll < cfg.malformed_rate:
            text = problem.malformed(right, rng)
        elif roll < cfg.malformed_rate + cfg.too_long_rate:
            text = problem.filler * 90 + problem.render(right)
        else:
            given = self._wrong(problem, right, rng) if rng.random() < cfg.error_rate else right
            text = problem.render(given)
            if cfg.revised_rate and rng.random() < cfg.revised_rate:  # draws only when asked: answers stay as they were
                draft = problem.mistake() or problem.other(right, None, rng)
                text = f"{problem.render(draft)}\nWait, that is not right. Corrected:\n{text}"
        tokens = count_tokens(text)
        if max_tokens is not None and tokens > max_tokens:
            return Answer(text=text[: 4 * max_tokens], output_tokens=max_tokens, truncated=True)
        return Answer(text=text, output_tokens=tokens, truncated=False)

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
