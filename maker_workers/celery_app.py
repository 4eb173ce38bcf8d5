"""The Celery app, tuned for very many tiny I/O-bound tasks.

Start workers with:  celery -A maker_workers.celery_app worker --pool threads -c 16 -Q maker --without-gossip
--without-mingle (not --without-heartbeat: Flower shows a worker online by its heartbeats).
"""

from __future__ import annotations

from celery import Celery

from maker_workers import transport  # noqa: F401  (redis:// and rediss:// brokers use its fixed transport)
from maker_workers.settings import settings

SAMPLE_TASK = "maker.sample"
NOOP_TASK = "maker.noop"
EMBED_EXAMPLES_TASK = "maker.embed_examples"
QUEUE = "maker"


def make_app(broker_url: str | None = None) -> Celery:
    """The app; the orchestrator builds its own with the broker it was given. Task events (for Flower)
    are the workers' setting, MAKER_TASK_EVENTS, read when a worker starts."""
    app = Celery("maker", broker=broker_url, include=["maker_workers.tasks"])
    app.conf.update(
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # No ack emulation: the orchestrator, not the broker, redelivers. A sample unheard of is replaced within
        # seconds (its adaptive timeout), so kombu's copy of every message in flight (two Redis writes per task,
        # a fifth of a worker's CPU), kept to redeliver it an hour later, would buy only stale samples. A worker
        # that stops gracefully still puts back the messages it had prefetched (kept in its memory).
        # Timeouts, so a publish or a consume on a link gone silent errors (and is retried) instead of hanging:
        # kombu passes socket_timeout=None to redis-py unless told.
        broker_transport_options={"ack_emulation": False, "socket_timeout": 10, "socket_connect_timeout": 5},
    )
    return app


class _FromEnvironment:
    """Worker settings for Celery, read only when a worker starts: importing this module (as the
    orchestrator does) never reads the environment, so a bad MAKER_ variable stops only a worker."""

    @property
    def broker_url(self) -> str:
        return settings().broker

    @property
    def worker_send_task_events(self) -> bool:
        return settings().task_events

    @property
    def task_send_sent_event(self) -> bool:
        return settings().task_events


app = make_app()
app.config_from_object(_FromEnvironment())
