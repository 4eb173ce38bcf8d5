"""The simulated LLM inside the worker process, behind httpx: every provider's code runs as over the network,
but no socket and no second process is in the way.

For benchmarks that measure the engine, not its stand-in for a model (`maker bench` prints both). The answers,
faults and latency are the HTTP sim's own (`SimApp`); the latency is slept in the calling thread.
"""

from __future__ import annotations

import time

import httpx

from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SimApp

# The base URL workers use for the in-process sim; it never leaves the process.
URL = "http://sim.inprocess/v1"


class InProcessTransport(httpx.BaseTransport):
    def __init__(self, config: SimConfig) -> None:
        self.app = SimApp(config)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        delay, raw = self.app.handle(request.method, request.url.path, request.read(), dict(request.headers))
        if delay > 0:
            time.sleep(delay)
        if raw is None:  # the HTTP sim holds the request, then hangs up
            raise httpx.RemoteProtocolError("the simulated LLM hung up", request=request)
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
        return httpx.Response(int(status_line.split()[1]), headers=headers, content=body, request=request)


def mounts(config: SimConfig | None) -> dict[str, httpx.BaseTransport]:
    """The httpx mounts that serve `URL` in process; none without a config."""
    return {} if config is None else {URL.rsplit("/", 1)[0]: InProcessTransport(config)}
