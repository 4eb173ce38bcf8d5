"""The orchestrator's numbers for Prometheus, served on `--metrics-port` while a run goes.

What is already counted is read, not counted again: the run's counters in Redis (the vote script's stats
hash, the checkpoint) are read at each scrape. The runner adds what only it knows: the samples it has in
flight and the rounds each step took. Every series carries the run's id.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from maker_workers.errors import ConfigError, MakerError
from maker_workers.pricing import usd
from orchestrator.engine.runner import CommittedStep, Runner
from orchestrator.reports.report import RunCounts

# Samples by outcome, from the vote script's counters: every sample it counted is exactly one of these.
OUTCOMES = {"vote": "votes", "red_flag": "red_flags", "error": "errors", "late": "late_votes"}


class RunMetrics:
    """A metrics server for one orchestrator process; `watch` tells it the run to report on."""

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:
        self.registry = CollectorRegistry()
        self._rounds = Histogram(
            "maker_run_rounds_per_step",
            "Rounds of samples a committed step took",
            ["run_id"],
            buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50),
            registry=self.registry,
        )
        self._runner: Runner | None = None
        self.registry.register(self)
        try:
            self._server, _ = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-port {port}: cannot serve metrics there ({exc.strerror}); pick a free port, or 0 for none"
            ) from None

    def watch(self, runner: Runner) -> None:
        self._runner = runner

    def step(self, committed: CommittedStep) -> None:
        if self._runner is not None:
            self._rounds.labels(self._runner.run_id).observe(committed.rounds)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def collect(self) -> Iterator[Metric]:
        """The run's figures as Redis holds them now (nothing before the run starts, or while Redis is away)."""
        runner = self._runner
        if runner is None:
            return
        run = runner.run_id
        try:
            stats = runner.store.stats()
            saved = runner.store.saved()
        except MakerError:
            return
        samples = CounterMetricFamily("maker_run_samples", "Samples recorded, by outcome", labels=["run_id", "outcome"])
        for outcome, counter in OUTCOMES.items():
            samples.add_metric([run, outcome], stats.get(counter, 0))
        red_flags = CounterMetricFamily("maker_run_red_flags", "Red flags by reason", labels=["run_id", "reason"])
        for reason, count in RunCounts.by_reason(stats).items():
            red_flags.add_metric([run, reason], count)
        tokens = CounterMetricFamily("maker_run_tokens", "Tokens served, by kind", labels=["run_id", "kind"])
        for kind in ("input", "output"):
            tokens.add_metric([run, kind], stats.get(f"{kind}_tokens", 0))
        yield samples
        yield red_flags
        yield tokens
        cost = usd(stats.get("cost_nusd", 0))
        yield _one(CounterMetricFamily, "maker_run_steps_decided", "Steps committed", run, saved.step if saved else 0)
        yield _one(CounterMetricFamily, "maker_run_cost_usd", "What the samples cost (priced models)", run, cost)
        yield _one(GaugeMetricFamily, "maker_run_samples_in_flight", "Sent, not yet heard of", run, runner.in_flight)
        yield _one(GaugeMetricFamily, "maker_run_k", "The margin new steps are decided with", run, runner.k)


def _one(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, documentation: str, run: str, value: float
) -> Metric:
    family = kind(name, documentation, labels=["run_id"])
    family.add_metric([run], value)
    return family
