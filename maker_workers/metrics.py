"""A worker process's own numbers for Prometheus, served on MAKER_METRICS_PORT.

Counted where a sample is drawn (sampling.py: outcomes, red flags, tokens, cost, waits) and where the
provider is called (providers/http.py: latency, errors by status). Each worker process serves its own
port: Prometheus adds the processes up, so these are never shared across processes or machines.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from maker_workers.errors import ConfigError
from maker_workers.votes import Outcome, Recorded

SAMPLES = Counter(
    "maker_worker_samples",
    "Samples this worker drew, by model and outcome (skipped: decided before the call)",
    ["model", "outcome"],
)
RED_FLAGS = Counter("maker_worker_red_flags", "Red-flagged answers by model and reason", ["model", "reason"])
TOKENS = Counter("maker_worker_tokens", "Tokens the provider served, by model and kind", ["model", "kind"])
COST = Counter("maker_worker_cost_usd", "What the provider calls cost in US dollars (unpriced: nothing)", ["model"])
IN_FLIGHT = Gauge("maker_worker_samples_in_flight", "Samples this worker is drawing now")
RATE_LIMIT_WAITS = Counter(
    "maker_worker_rate_limit_waits", "Waits for the shared rate limit or after a 429, by model", ["model"]
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "maker_worker_rate_limit_wait_seconds", "Seconds spent in those waits, by model", ["model"]
)
PROVIDER_LATENCY = Histogram(
    "maker_worker_provider_latency_seconds",
    "Time of one provider call (answered or failed), by provider",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PROVIDER_ERRORS = Counter(
    "maker_worker_provider_errors",
    "Failed provider calls by provider and status (an HTTP status, or timeout / unreachable)",
    ["provider", "status"],
)


def sampled(model: str, recorded: Recorded | None) -> None:
    """Count one sample's outcome as the vote script recorded it (None: skipped, the model never called); a vote
    that decided its step is a vote, as in the run's counters."""
    outcome = Outcome.SKIPPED if recorded is None else recorded.outcome
    SAMPLES.labels(model, Outcome.VOTE.value if outcome is Outcome.DECIDED else outcome.value).inc()
    if recorded is not None and recorded.outcome is Outcome.RED_FLAG:
        RED_FLAGS.labels(model, recorded.reason or "").inc()


def served(model: str, input_tokens: int, output_tokens: int, cost_nusd: int | None) -> None:
    TOKENS.labels(model, "input").inc(input_tokens)
    TOKENS.labels(model, "output").inc(output_tokens)
    COST.labels(model).inc((cost_nusd or 0) / 1e9)


def waited(model: str, seconds: float) -> None:
    RATE_LIMIT_WAITS.labels(model).inc()
    RATE_LIMIT_WAIT_SECONDS.labels(model).inc(seconds)


def serve(port: int | None, host: str = "0.0.0.0") -> None:
    """Serve this process's metrics on `port` (None or 0: not at all); a taken port is a ConfigError."""
    if not port:
        return
    try:
        start_http_server(port, host)
    except OSError as exc:
        raise ConfigError(
            f"MAKER_METRICS_PORT {port}: cannot serve metrics there ({exc.strerror}); each worker process needs "
            "a port of its own: give every worker on this host a different MAKER_METRICS_PORT"
        ) from None
