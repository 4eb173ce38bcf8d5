"""Sending sample tasks to the broker, on one connection kept for the run and made anew when it breaks.

Publishing a sample again is safe (the vote script counts a sample id once), so a send that fails on a
dropped connection is retried on a fresh one. kombu's own retry is not enough: after a reset it can keep a
closed channel (maker_workers/transport.py turns what that raises into a ConnectionError; an AttributeError
from elsewhere in kombu is taken the same way). One connection for every send is also cheaper than taking
one from the pool per sample, and a round's samples go in one batch: one round trip to Redis.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from celery import Celery
from celery.utils.nodenames import anon_nodename
from kombu import Connection
from kombu.exceptions import BatchPublishError, OperationalError
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from maker_workers.celery_app import QUEUE, SAMPLE_TASK
from maker_workers.connections import waiting_for_redis
from maker_workers.errors import REDIS_FULL, StoreError
from maker_workers.sampling import SampleRequest

# Broker priorities: kombu's Redis transport keeps a list per priority step (0, 3, 6, 9) and its workers pop the
# lowest first.
URGENT, LATER = 0, 3


def _full(exc: BaseException) -> bool:
    if isinstance(exc, BatchPublishError) and exc.__cause__ is not None:
        return _full(exc.__cause__)
    return "maxmemory" in str(exc) or "OOM" in str(exc)


def _broken(exc: BaseException) -> bool:
    """A connection that went away (kombu's OperationalError, or its closed-channel AttributeError; a batch that
    failed so); a full Redis is not: sending again cannot help."""
    if isinstance(exc, BatchPublishError) and exc.__cause__ is not None:
        return _broken(exc.__cause__)
    gone = (OperationalError, AttributeError, ConnectionError, TimeoutError, redis.ConnectionError, redis.TimeoutError)
    return isinstance(exc, gone) and not _full(exc)


class Publisher:
    def __init__(self, broker: Celery, give_up_after_s: float = 30.0) -> None:
        self.broker = broker
        self.give_up_after_s = give_up_after_s
        self._connection: Connection | None = None
        self._producer: Any = None
        self._origin = anon_nodename()  # who sent the task, as Celery names it (it would ask for every message)

    def send(self, request: SampleRequest, argsrepr: str) -> None:
        """`argsrepr` is what Flower shows of the task, instead of a saferepr of the whole state."""
        self.send_many([(request, argsrepr, URGENT)])

    def send_many(self, requests: list[tuple[SampleRequest, str, int]]) -> None:
        """Each request with its `argsrepr` and priority, in one batch; all of it is sent again if any of it may
        not have been (a sample sent twice is counted once)."""
        retrying = Retrying(
            retry=retry_if_exception(_broken),
            stop=stop_after_delay(self.give_up_after_s),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            reraise=False,
            before_sleep=lambda state: waiting_for_redis(
                "sending samples", state.attempt_number, state.outcome.exception() if state.outcome else None
            ),
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._send(requests)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            spent = f"{self.give_up_after_s:.0f} s"
            raise StoreError(f"sending a sample to the broker failed for {spent}: {cause}") from cause
        except (OperationalError, BatchPublishError, redis.RedisError) as exc:
            raise StoreError(f"sending a sample to the broker failed: {REDIS_FULL if _full(exc) else exc}") from exc

    def _send(self, requests: list[tuple[SampleRequest, str, int]]) -> None:
        if self._producer is None:
            self._connection = self.broker.connection_for_write()
            self._producer = self.broker.amqp.Producer(self._connection, auto_declare=False)
            self._producer.maybe_declare(self.broker.amqp.queues[QUEUE])  # once, not per message
        amqp = self.broker.amqp
        try:
            with self._producer.batch():
                for request, argsrepr, priority in requests:
                    # Celery's own message and sender, without `send_task`'s routing, config look-ups, parent-task
                    # check and result object: they cost as much as the message itself (93 against 46 us a
                    # message, measured alone). The message on the wire is the same.
                    message = amqp.create_task_message(
                        request.sample_id,
                        SAMPLE_TASK,
                        [request.model_dump(mode="json")],
                        {},
                        argsrepr=argsrepr,
                        kwargsrepr="{}",
                        origin=self._origin,
                        ignore_result=None,  # the task's own setting (ignored), as send_task leaves it
                    )
                    amqp.send_task_message(
                        self._producer,
                        SAMPLE_TASK,
                        message,
                        queue=QUEUE,
                        priority=priority,
                        declare=[],
                        retry=False,  # retried above, on a fresh connection
                    )
        except BaseException:
            self.close()  # the next attempt starts on a fresh connection
            raise

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.release()
        self._connection = self._producer = None
