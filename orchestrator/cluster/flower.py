"""`maker flower`: Flower watching a cluster's workers and sample tasks, with the gaps of a bare `celery flower` closed.

A bare Flower asks the workers who they are (the broadcast `inspect`) once, when it starts, so a worker that
starts after it never reaches `/api/workers`; here that question is asked again every few seconds. Off
loopback it refuses to start without basic auth, as `maker mcp` does without a token.
"""

from __future__ import annotations

import os
import sys

from pydantic import BaseModel, Field, field_validator

from maker_workers.celery_app import make_app
from maker_workers.connections import redact
from maker_workers.errors import ConfigError
from orchestrator.cluster.connect import connect
from orchestrator.cluster.listen import is_loopback

READY = "flower listening on"


class FlowerOptions(BaseModel):
    broker_url: str
    host: str = "127.0.0.1"
    port: int = Field(5555, ge=0, le=65535)
    basic_auth: str | None = Field(None, repr=False, description="USER:PASSWORD, never printed")
    inspect_every_s: float = Field(5.0, gt=0, description="how often the workers are asked who they are")

    @field_validator("basic_auth")
    @classmethod
    def _user_and_password(cls, value: str | None) -> str | None:
        if value is not None:
            user, colon, password = value.partition(":")
            if not (user and colon and password):
                raise ValueError("give it as USER:PASSWORD, both non-empty")
        return value


def check(options: FlowerOptions) -> None:
    """Refuse what would expose the cluster (a listener other machines reach, with nothing to log in with), and
    a Redis broker that cannot be reached: Flower itself would only log its retries, forever."""
    if options.basic_auth is None and not is_loopback(options.host):
        raise ConfigError(
            f"--host {options.host} is reachable from other machines: give --basic-auth USER:PASSWORD "
            "(or MAKER_FLOWER_BASIC_AUTH), which the browser and every API call must then send"
        )
    if options.broker_url.startswith(("redis://", "rediss://", "unix://")):
        connect(options.broker_url).close()


def serve(options: FlowerOptions) -> None:
    """Run Flower until Ctrl-C or SIGTERM. Flower's own options are tornado globals, set here once."""
    check(options)
    try:
        from flower.app import Flower  # Flower and tornado load only for this command
        from flower.urls import settings
    except ImportError as exc:
        raise ConfigError(
            f"maker flower needs Flower, which is not installed ({exc.name}): pip install flower (the flower "
            "extra of maker)"
        ) from None
    from tornado.ioloop import PeriodicCallback
    from tornado.options import options as flower_options

    flower_options.address = options.host
    flower_options.port = options.port
    if options.basic_auth is None:
        # Loopback only (checked above): Flower serves its API unauthenticated only when told to.
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    else:
        flower_options.basic_auth = [options.basic_auth]
    flower = Flower(capp=make_app(options.broker_url), options=flower_options, **settings)
    try:
        port = flower.start_http_server()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {options.host}:{options.port}: {exc.strerror}") from exc
    PeriodicCallback(flower.update_workers, options.inspect_every_s * 1000).start()
    where = f"[{options.host}]" if ":" in options.host else options.host
    print(f"{READY} http://{where}:{port} watching {redact(options.broker_url)}", file=sys.stderr, flush=True)
    try:
        flower.start()
    except KeyboardInterrupt:
        pass
    finally:
        flower.stop()
