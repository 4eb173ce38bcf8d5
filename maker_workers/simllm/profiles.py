"""Simulated models shaped like the ones the MAKER paper measured: `--sim-profile NAME`.

A profile is a named set of SimConfig values; `SimConfig(profile=NAME, **given)` starts from them, and what
is given overrides them. From the paper (arXiv 2511.09030, its calibration on Towers of Hanoi):

| profile | per-step error (1 - p) | mean output tokens |
|---|---|---|
| gpt-4.1-mini (T = 0.1) | 0.0022 | 538 |
| gpt-4.1-nano | 0.3571 | 842 |
| o3-mini (low) | 0.0018 | 535 |
| gpt-oss-20b | 0.0358 | 1104 |
| haiku-4.5 | 0.1839 | 588 |

The rest is ours, chosen to look like the paper's observations and like a real API, not measured:

- Length. Answers are padded with reasoning prose to a lognormal length around the mean (`output_tokens`,
  `output_tokens_sigma`). The error rate rises past 700 tokens (`length_error_slope`: each 100 tokens past
  it adds that share of the base rate) and is scaled so that among answers within the paper's 750-token red
  flag it is the measured figure. Longer answers are cut at the request's max_tokens and red-flagged
  `too_long` by the worker: about 4% of gpt-4.1-mini's and o3-mini's answers, 9% of haiku-4.5's, 63% of
  gpt-4.1-nano's and 88% of gpt-oss-20b's, whose mean of 1104 tokens is past the limit. That is meant: it is
  what a 750-token red flag does to those models.
- Difficulty. A `hard_step_share` of the steps (10%) is hard, its error multiplied by a factor uniform in
  [1, `hard_step_max`]; the other steps are easier by as much, so the mean over steps is the figure. The
  strong models' hard steps reach 10x the mean; the weak ones' less, so that on their hardest steps the
  right answer still outnumbers the usual mistake, or no vote could ever fix them.
- Wrong answers mostly repeat the step's plausible mistake (`collision_share`).
- Latency: a floor (time to the first token) plus a lognormal tail whose mean is the mean answer's
  generation time at the model's usual output speed (gpt-4.1-mini ~90 tokens/s, gpt-4.1-nano ~150,
  o3-mini ~150 after a slower start, gpt-oss-20b ~220 on a fast host, haiku-4.5 ~105), so 4-7 s an answer.
  It does not follow the answer's own length, and a truncated answer takes as long as any other.
  `latency_scale` shrinks it for tests (0.01: tens of milliseconds).
"""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "gpt-4.1-mini": {
        "error_rate": 0.0022,
        "output_tokens": 538,
        "output_tokens_sigma": 0.2,
        "length_error_slope": 1.0,
        "hard_step_share": 0.1,
        "hard_step_max": 10.0,
        "collision_share": 0.8,
        "corrupt_share": 0.1,
        "malformed_rate": 0.005,
        "too_long_rate": 0.0,
        "latency_floor_ms": 500.0,
        "latency_ms": 6000.0,
        "latency_sigma": 0.5,
    },
    "gpt-4.1-nano": {
        "error_rate": 0.3571,
        "output_tokens": 842,
        "output_tokens_sigma": 0.25,
        "length_error_slope": 0.5,
        "hard_step_share": 0.1,
        "hard_step_max": 1.4,
        "collision_share": 0.6,
        "corrupt_share": 0.15,
        "malformed_rate": 0.03,
        "too_long_rate": 0.0,
        "latency_floor_ms": 300.0,
        "latency_ms": 5500.0,
        "latency_sigma": 0.5,
    },
    "o3-mini": {
        "error_rate": 0.0018,
        "output_tokens": 535,
        "output_tokens_sigma": 0.2,
        "length_error_slope": 1.0,
        "hard_step_share": 0.1,
        "hard_step_max": 10.0,
        "collision_share": 0.8,
        "corrupt_share": 0.1,
        "malformed_rate": 0.003,
        "too_long_rate": 0.0,
        "latency_floor_ms": 1000.0,
        "latency_ms": 3500.0,
        "latency_sigma": 0.6,
    },
    "gpt-oss-20b": {
        "error_rate": 0.0358,
        "output_tokens": 1104,
        "output_tokens_sigma": 0.3,
        "length_error_slope": 1.0,
        "hard_step_share": 0.1,
        "hard_step_max": 10.0,
        "collision_share": 0.7,
        "corrupt_share": 0.1,
        "malformed_rate": 0.02,
        "too_long_rate": 0.0,
        "latency_floor_ms": 300.0,
        "latency_ms": 5000.0,
        "latency_sigma": 0.6,
    },
    "haiku-4.5": {
        "error_rate": 0.1839,
        "output_tokens": 588,
        "output_tokens_sigma": 0.2,
        "length_error_slope": 1.0,
        "hard_step_share": 0.1,
        "hard_step_max": 2.0,
        "collision_share": 0.7,
        "corrupt_share": 0.1,
        "malformed_rate": 0.01,
        "too_long_rate": 0.0,
        "latency_floor_ms": 600.0,
        "latency_ms": 5500.0,
        "latency_sigma": 0.5,
    },
}
"""Each profile's SimConfig values; fields it leaves out keep their defaults (seed among them)."""
