"""kombu's Redis transport, with two fixes and one saving. The fix: a channel whose connection dropped says so with
a ConnectionError.

After a connection to Redis drops, kombu may still use a channel it has closed (to ack a finished task as the
worker's consumer restarts, or to publish); the channel's `connection` is then None and kombu fails with
AttributeError, which Celery takes for an unrecoverable error: the worker stops (seen on a Redis restart).
As a ConnectionError it is handled as what it is: the worker reconnects, a publish is retried. A lost ack
costs nothing: the sample is replaced by the orchestrator or delivered again, and counted once either way.
The saving: one Redis client per channel instead of one per message.
The second fix: a consumer stops at once. A consumer keeps a BRPOP waiting in Redis (1 s at a time) and kombu,
closing the channel, reads its reply, since it may hold a message already taken off the queue: an idle worker's
stop waited out the rest of that second. The channel now ends its own BRPOP first with CLIENT UNBLOCK, which
answers it at once, with nothing or with the message it had taken, which kombu then delivers as before.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

SCHEMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):
    _sync_client: tuple[Any, redis.Redis] | None = None  # (the pool it was made for, the client)

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        """One client per pool, where kombu builds a new one for every publish and every ack. A redis-py client
        is thread-safe and cheap to keep, but costly to build (a fifth of a worker's CPU went to it per task).
        A closed channel has no pool, so it still raises as below."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        if self._sync_client is None or self._sync_client[0] is not pool:
            self._sync_client = (pool, super()._create_client())
        return self._sync_client[1]

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Learn the server's id of the consumer's connection, once for each socket it opens, before its BRPOP."""
        connection = self.client.connection
        sock = connection._sock
        if sock is not None and getattr(connection, "maker_client_id", (None, None))[0] is not sock:
            try:
                connection.send_command("CLIENT", "ID")
                client_id = int(connection.read_response())
            except redis.ResponseError:  # CLIENT refused (an ACL): close waits out the BRPOP, as kombu's does
                client_id = None
            connection.maker_client_id = (sock, client_id)
        super()._brpop_start(timeout)

    def close(self) -> None:
        """Answer the consumer's BRPOP now (CLIENT UNBLOCK), so that kombu's close need not wait for it."""
        connection = self._in_poll
        if connection and not self._closing:
            sock, client_id = getattr(connection, "maker_client_id", (None, None))
            if client_id is not None and sock is connection._sock:
                with contextlib.suppress(redis.RedisError), self.conn_or_acquire() as client:
                    client.client_unblock(client_id)
        super().close()

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            raise redis.ConnectionError("the channel to Redis was closed when its connection dropped")
        return super()._connparams(asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make this the transport of redis:// and rediss:// URLs. Through kombu's aliases, not Celery's
    broker_transport: kombu turns TLS on for rediss:// by the alias name, and Flower picks its broker view by the
    URL's scheme, so both must stay as they are."""
    for scheme in SCHEMES:
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"


install()
