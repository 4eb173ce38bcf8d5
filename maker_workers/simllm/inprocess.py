"""The simulated LLM inside the worker process: every provider's code runs as over the network (its request
body, its error mapping, its parsing of the answer), but no socket, no second process and none of httpx's
request machinery is in the way.

For benchmarks that measure the engine, not its stand-in for a model (`maker bench` prints the HTTP figures
beside). The answers, faults and latency are the HTTP sim's own (`SimApp`); the latency is slept in the calling
thread.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx

from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SimApp

# The base URL workers use for the in-process sim; it never leaves the process.
ORIGIN = "http://sim.inprocess"
URL = f"{ORIGIN}/v1"


class InProcessTransport(httpx.BaseTransport):
    """Serves httpx requests to `ORIGIN` from the sim (GETs, and anything but a provider's JSON POST)."""

    def __init__(self, config: SimConfig) -> None:
        # A stream of its own: worker processes that drew the same seeded sequence would answer alike.
        self.app = SimApp(config, stream=uuid.uuid4().hex)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        read_timeout = request.extensions.get("timeout", {}).get("read")
        return self.serve(
            request.method, request.url.path, request.read(), dict(request.headers), request, read_timeout
        )

    def serve(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        request: httpx.Request,
        read_timeout: float | None,
    ) -> httpx.Response:
        """As the HTTP sim answers over a socket: `headers` with lower-case names, the answer after its latency,
        a read timeout when that is longer than `read_timeout`, a hang-up when the sim holds the request."""
        delay, raw = self.app.handle(method, path, body, headers)
        if read_timeout is not None and delay > read_timeout:
            time.sleep(read_timeout)
            raise httpx.ReadTimeout("the simulated LLM did not answer in time", request=request)
        if delay > 0:
            time.sleep(delay)
        if raw is None:  # the HTTP sim holds the request, then hangs up
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        head, _, content = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        fields = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
        return httpx.Response(int(status_line.split()[1]), headers=fields, content=content, request=request)


class InProcessClient(httpx.Client):
    """An httpx client whose JSON POSTs to the in-process sim skip httpx's request building (a third of a
    worker's CPU per sample went there and to the sim); every other request goes through httpx as usual."""

    def __init__(self, config: SimConfig, **kwargs: Any) -> None:
        self._sim = InProcessTransport(config)
        # The request a response or error names, one per URL (40 µs each to build): for its URL only.
        self._requests: dict[str, httpx.Request] = {}
        super().__init__(mounts={ORIGIN: self._sim}, **kwargs)

    def post(self, url: httpx.URL | str, *, json: Any = None, headers: Any = None, **kwargs: Any) -> httpx.Response:
        fast = isinstance(url, str) and url.startswith(URL) and isinstance(headers, dict | None)
        if fast and json is not None and not kwargs and not self.is_closed:
            # Names in lower case, as the sim reads them off a socket.
            fields = {name.lower(): value for name, value in (headers or {}).items()}
            request = self._requests.get(url) or self._requests.setdefault(url, httpx.Request("POST", url))
            return self._sim.serve("POST", url.removeprefix(ORIGIN), _encoded(json), fields, request, self.timeout.read)
        return super().post(url, json=json, headers=headers, **kwargs)


def _encoded(body: Any) -> bytes:
    return json.dumps(body).encode()


def client(config: SimConfig | None, **kwargs: Any) -> httpx.Client:
    """The worker's HTTP client: one that serves `URL` in process when `config` is set, else plain httpx."""
    return httpx.Client(**kwargs) if config is None else InProcessClient(config, **kwargs)
