"""How maker talks to Redis when the network is not perfect: which commands may be sent again.

A command whose reply is lost may have run or not. Everything maker sends is safe to send again (reads,
idempotent writes, scripts guarded by a step index or deduplicated by sample id) except a blocking pop:
the pop that ran took a notice with it. So clients retry on a dropped connection, with backoff, for
about half a minute (a Redis restart), saying so on stderr from the third try, and the one client that
pops never retries.
"""

from __future__ import annotations

import itertools
import logging
import re
import socket
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from maker_workers.errors import ConfigError, MakerError
from maker_workers.settings import settings

_TRANSIENT = [redis.ConnectionError, redis.TimeoutError]
RETRIES = 20  # about 30 s at this backoff: a Redis restart, AOF loaded
log = logging.getLogger("maker.redis")


def waiting_for_redis(what: str, attempt: int, error: BaseException) -> None:
    """One line on stderr (a logging warning: Python's last-resort handler, or Celery's log in a worker) when
    a command has failed three times in a row: an outage is worth saying, one dropped connection is not."""
    if attempt == 3:
        log.warning("%s: Redis is unreachable (%s); retrying with backoff", what, error)


class _SayingRetry(Retry):
    """redis-py's retry, which also says when it goes on (see waiting_for_redis)."""

    def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        failures = 0

        def failed(error: Exception, *rest: Any) -> Any:
            nonlocal failures
            failures += 1
            waiting_for_redis("a Redis command", failures, error)
            return fail(error, *rest)

        return super().call_with_retry(do, failed, *args, **kwargs)


def _policy(retries: int) -> dict[str, Any]:
    if not retries:
        return {"retry": Retry(NoBackoff(), 0), "retry_on_error": []}
    return {
        "retry": _SayingRetry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries),
        "retry_on_error": _TRANSIENT,
    }


def connect(url: str, **options: Any) -> redis.Redis:
    """A client that rides out dropped connections and short outages."""
    return redis.Redis.from_url(url, **options, **_policy(RETRIES))


def _same_server(client: redis.Redis, retries: int, **options: Any) -> redis.Redis:
    """A client of its own (own pool) to `client`'s server, with this retry policy and these options."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, **_policy(retries), **options}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def never_twice(client: redis.Redis, socket_timeout: float) -> redis.Redis:
    """A client to the same server that never sends a command again (for BLPOP). Its socket timeout
    (longer than any BLPOP it sends) turns a half-open connection, whose reply never comes, into an error."""
    return _same_server(client, 0, socket_timeout=socket_timeout)


def retrying(client: redis.Redis) -> redis.Redis:
    """The same server through a client that retries, whatever the given one does."""
    return _same_server(client, RETRIES)


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


def reach(client: redis.Redis, url: str, setting: str) -> None:
    """The first contact: a ping with a short connect timeout. A wrong password, or a timeout (a TLS URL on a
    plain port, a host that drops packets), is said at once: ConfigError for the password, MakerError otherwise.
    A refused connection or a Redis still loading its data is waited for up to MAKER_REDIS_WAIT_S (a worker
    started while Redis restarts), saying so from the third try; `setting` names where the URL came from."""
    patience_s = settings().redis_wait_s
    probe = _same_server(client, 0, socket_connect_timeout=5.0, socket_timeout=5.0)
    give_up_at = time.monotonic() + patience_s
    try:
        for attempt in itertools.count(1):
            try:
                probe.ping()
                return
            except redis.AuthenticationError as exc:
                raise ConfigError(
                    f"Redis at {redact(url)} refused the password: {exc}; fix the password in {setting}"
                ) from exc
            except redis.RedisError as exc:
                # A name that does not resolve will not resolve in 15 s: said at once, as a timeout is.
                unresolved = isinstance(exc.__cause__ or exc.__context__, socket.gaierror)
                refused = isinstance(exc, redis.ConnectionError) and not isinstance(exc, redis.TimeoutError)
                transient = refused and not unresolved
                if transient and time.monotonic() < give_up_at:
                    waiting_for_redis(f"the first contact with {redact(url)}", attempt, exc)
                    time.sleep(min(0.2 * attempt, 2.0))
                    continue
                hint = ""
                if transient and patience_s:
                    hint = f" (waited {patience_s:g} s for it; MAKER_REDIS_WAIT_S sets how long)"
                if unresolved:
                    hint = " (the host name does not resolve: check its spelling, or the DNS)"
                if url.startswith("rediss://"):
                    hint = " (rediss:// speaks TLS: is that port a TLS port? A plain one needs redis://)"
                raise MakerError(f"cannot reach Redis at {redact(url)}: {exc}{hint}; check {setting}") from exc
    finally:
        probe.close()
