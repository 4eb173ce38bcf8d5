"""The cluster a run talks to: the one named by a Redis URL, or the embedded default started for it.

One way to get a cluster for the CLI, the benchmark, the Python API and (later) the MCP server.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery
from pydantic import BaseModel, Field

from maker_workers import connections
from maker_workers.celery_app import make_app
from maker_workers.errors import ConfigError, MakerError
from maker_workers.simllm.model import SimConfig
from orchestrator.embedded import Embedded
from orchestrator.model_options import ModelOptions


class ClusterOptions(BaseModel):
    """Where to run: `redis_url` names a running cluster; without it an embedded one is started."""

    redis_url: str | None = None
    broker_url: str | None = None
    workers: int = Field(2, ge=1, description="embedded Celery worker processes")
    concurrency: int = Field(8, ge=1, description="threads per embedded worker")
    sim: SimConfig = Field(default_factory=SimConfig, description="the embedded simulated LLM")
    models: ModelOptions = Field(default_factory=ModelOptions, description="the model(s) the embedded workers call")


@dataclass
class Cluster:
    client: redis.Redis
    broker: Celery
    redis_url: str
    broker_url: str
    embedded: Embedded | None = None
    health_check: Callable[[], None] = field(default=lambda: None)


def redact(url: str) -> str:
    """`url` with its password masked, for messages: a Redis URL may carry one (redis://:PASSWORD@host)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}:***@{host}"
    except ValueError:  # not even a URL: it may still hold a password, so none of it is shown
        return "(the URL given)"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)  # redis-py reads ?password= too
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def connect(url: str) -> redis.Redis:
    try:
        client = connections.connect(url)
    except ValueError as exc:  # redis-py's word for a URL it cannot read (scheme, port, db)
        raise ConfigError(f"--redis-url {redact(url)}: {exc}") from exc
    try:
        client.ping()
    except redis.RedisError as exc:
        raise MakerError(f"cannot reach Redis at {redact(url)}: {exc}; check --redis-url / MAKER_REDIS_URL") from exc
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
                    workers=options.workers, concurrency=options.concurrency, sim=options.sim, models=options.models
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
