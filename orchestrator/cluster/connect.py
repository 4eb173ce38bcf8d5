"""The cluster a run talks to: the one named by a Redis URL, or the embedded default started for it.

One way to get a cluster for the CLI, the benchmark, the Python API and (later) the MCP server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis
from celery import Celery
from pydantic import BaseModel, Field

from maker_workers import connections
from maker_workers.celery_app import make_app
from maker_workers.connections import redact
from maker_workers.errors import ConfigError
from maker_workers.simllm.model import SimConfig
from orchestrator.cluster.embedded import Embedded
from orchestrator.cluster.model_options import ModelOptions


class ClusterOptions(BaseModel):
    """Where to run: `redis_url` names a running cluster; without it an embedded one is started."""

    redis_url: str | None = None
    broker_url: str | None = None
    workers: int = Field(2, ge=1, description="embedded Celery worker processes")
    concurrency: int | None = Field(
        None, ge=1, description="threads per embedded worker; None: 8 for a simulated model with no latency, else 32"
    )
    sim: SimConfig = Field(default_factory=SimConfig, description="the embedded simulated LLM")
    sim_inprocess: bool = Field(False, description="the embedded sim inside each worker, not over HTTP (benchmarks)")
    models: ModelOptions = Field(default_factory=ModelOptions, description="the model(s) the embedded workers call")

    @property
    def threads(self) -> int:
        """Threads wait on the model: a model with latency needs many in flight (speculation keeps them busy); a
        simulated one with none keeps the CPU busy instead, where fewer threads contend less for the GIL."""
        if self.concurrency is not None:
            return self.concurrency
        sim = self.sim
        no_latency = sim.latency_scale == 0 or (sim.latency_ms == 0 and sim.latency_floor_ms == 0)
        only_sim = self.models.needs_sim and not self.models.ensemble
        return 8 if only_sim and no_latency else 32


@dataclass
class Cluster:
    client: redis.Redis
    broker: Celery
    redis_url: str
    broker_url: str
    embedded: Embedded | None = None
    health_check: Callable[[], None] = field(default=lambda: None)


def connect(url: str) -> redis.Redis:
    try:
        client = connections.connect(url)
    except ValueError as exc:  # redis-py's word for a URL it cannot read (scheme, port, db)
        raise ConfigError(f"--redis-url {redact(url)}: {exc}") from exc
    connections.reach(client, url, "--redis-url / MAKER_REDIS_URL")
    return client


@contextlib.contextmanager
def cluster_for_run(options: ClusterOptions) -> Iterator[Cluster]:
    """The named cluster, or a private one that lives as long as the `with` (Ctrl-C included)."""
    with contextlib.ExitStack() as stack:
        embedded = None
        redis_url = options.redis_url
        if redis_url is None:
            embedded = stack.enter_context(
                Embedded(
                    workers=options.workers,
                    concurrency=options.threads,
                    sim=options.sim,
                    models=options.models,
                    sim_inprocess=options.sim_inprocess,
                )
            )
            redis_url = embedded.redis_url
        client = connect(redis_url)
        stack.callback(client.close)
        broker_url = options.broker_url or redis_url
        yield Cluster(
            client=client,
            broker=make_app(broker_url),
            redis_url=redis_url,
            broker_url=broker_url,
            embedded=embedded,
            health_check=embedded.check if embedded else lambda: None,
        )
