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
        headers = dict(request.headers)  # httpx gives the names in lower case, as the sim reads them off a socket
        return self.serve(request.method, request.url.path, request.read(), headers, request, read_timeout, lazy=False)

    def serve(
        self,
        method: str,
        path: str,
        body: bytes | Any,
        headers: dict[str, str],
        request: httpx.Request,
        read_timeout: float | None,
        *,
        lazy: bool,
    ) -> httpx.Response:
        """As the HTTP sim answers over a socket: the answer after its latency, a read timeout when that is longer
        than `read_timeout`, a hang-up when the sim holds the request. `body` its bytes or its JSON already
        parsed; `headers` with lower-case names; `lazy`: a success's body is not encoded (see `_Answered`)."""
        delay, reply = self.app.reply(method, path, body, headers)
        if read_timeout is not None and delay > read_timeout:
            time.sleep(read_timeout)
            raise httpx.ReadTimeout("the simulated LLM did not answer in time", request=request)
        if delay > 0:
            time.sleep(delay)
        if reply.hangs_up:  # the sim holds the request, then hangs up
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return _Answered(reply.status, reply.payload, reply.headers, request, lazy=lazy)


class _Answered(httpx.Response):
    """The sim's answer as httpx hands it over. `json()` is the sim's payload itself (made anew for each request),
    without encoding and decoding it; with `lazy`, a success's body is not even encoded (provider code reads a
    success through `json()`, and quotes an error's text: an error's body is always there)."""

    def __init__(
        self, status: int, payload: dict[str, Any], headers: dict[str, str], request: httpx.Request, *, lazy: bool
    ) -> None:
        content = None if lazy and status < 400 else json.dumps(payload).encode()
        fields = {"content-type": "application/json", **headers}
        super().__init__(status, headers=fields, content=content, request=request)
        self._payload = payload

    def json(self, **kwargs: Any) -> Any:
        return self._payload


class InProcessClient(httpx.Client):
    """An httpx client whose JSON POSTs to the in-process sim skip httpx's request building and the JSON round
    trips (a third of a worker's CPU per sample went there and to the sim); every other request goes through httpx
    as usual."""

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
            path = url.removeprefix(ORIGIN)
            return self._sim.serve("POST", path, json, fields, request, self.timeout.read, lazy=True)
        return super().post(url, json=json, headers=headers, **kwargs)


def client(config: SimConfig | None, **kwargs: Any) -> httpx.Client:
    """The worker's HTTP client: one that serves `URL` in process when `config` is set, else plain httpx."""
    return httpx.Client(**kwargs) if config is None else InProcessClient(config, **kwargs)
