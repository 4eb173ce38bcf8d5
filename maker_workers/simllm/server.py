"""The simulated LLM over HTTP/1.1: `POST /v1/chat/completions` (with `usage`) and `GET /health`.

A small asyncio server: one event loop holds thousands of keep-alive connections from worker threads,
sleeps out the simulated latency without a thread per request, and spends little CPU per request, so a
benchmark on one machine measures the engine rather than its stand-in for a model.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

from maker_workers.simllm.model import SimConfig, SimModel, count_tokens

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required", 413: "Payload Too Large"}
MAX_BODY = 1 << 20


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _response(status: int, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _error(status: int, message: str) -> bytes:
    return _response(status, {"error": {"message": message, "type": "invalid_request_error"}})


class SimApp:
    """Turns one parsed request into (delay, response bytes)."""

    def __init__(self, config: SimConfig) -> None:
        self.model = SimModel(config)

    def handle(self, method: str, path: str, body: bytes) -> tuple[float, bytes]:
        path = path.rstrip("/")
        if method == "GET" and path in ("/health", "/v1/health"):
            return 0.0, _response(200, {"status": "ok", "config": self.model.config.model_dump()})
        if method != "POST" or path != "/v1/chat/completions":
            return 0.0, _error(404, f"no route {method} {path}; use POST /v1/chat/completions")
        try:
            request = json.loads(body)
            messages = request["messages"]
            prompt = next(m["content"] for m in reversed(messages) if m.get("role") == "user")
            answer = self.model.answer(prompt, float(request.get("temperature", 1.0)), request.get("max_tokens"))
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            return 0.0, _error(400, f"cannot answer this request: {exc!r}")
        prompt_tokens = sum(count_tokens(m.get("content", "")) for m in messages)
        return self.model.latency_s(), _response(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model", "sim-hanoi"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.text},
                        "finish_reason": "length" if answer.truncated else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": answer.output_tokens,
                    "total_tokens": prompt_tokens + answer.output_tokens,
                },
            },
        )


class _Connection(asyncio.Protocol):
    """HTTP/1.1 keep-alive; requests on one connection are answered in order."""

    def __init__(self, app: SimApp, open_connections: set[_Connection]) -> None:
        self.app = app
        self.open_connections = open_connections
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self.writer = asyncio.get_running_loop().create_task(self._write_in_order())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open_connections.discard(self)
        self.writer.cancel()

    def close(self) -> None:
        self.writer.cancel()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            try:
                request = self._next_request()
            except HttpError as exc:
                self.queue.put_nowait((0.0, _error(exc.status, str(exc))))
                self.queue.put_nowait(None)  # close after answering: the stream is out of step
                self.buffer.clear()
                return
            if request is None:
                return
            self.queue.put_nowait(self.app.handle(*request))

    def _next_request(self) -> tuple[str, str, bytes] | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_BODY:
                raise HttpError(413, "request head too large")
            return None
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise HttpError(400, f"bad request line {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            raise HttpError(411, "send a Content-Length; chunked bodies are not supported")
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            raise HttpError(413, f"body over {MAX_BODY} bytes")
        if len(self.buffer) < end + 4 + length:
            return None
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        return parts[0], parts[1], body

    async def _write_in_order(self) -> None:
        while (item := await self.queue.get()) is not None:
            delay, response = item
            if delay:
                await asyncio.sleep(delay)
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(response)
        if self.transport is not None:
            self.transport.close()


class SimServer:
    """The server on its own event loop in a background thread; `url` is its OpenAI base URL."""

    def __init__(self, host: str, port: int, config: SimConfig) -> None:
        self.app = SimApp(config)
        self._connections: set[_Connection] = set()
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            self._loop.create_server(
                lambda: _Connection(self.app, self._connections), host, port, reuse_address=True, backlog=1024
            )
        )
        sock = self._server.sockets[0].getsockname()
        self.url = f"http://{sock[0]}:{sock[1]}/v1"
        self._thread: threading.Thread | None = None

    @property
    def model(self) -> SimModel:
        return self.app.model

    def serve_forever(self) -> None:
        self._loop.run_forever()

    def start_in_thread(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="sim-llm", daemon=True)
        self._thread.start()

    async def _close(self) -> None:
        self._server.close()
        for connection in list(self._connections):
            connection.close()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def shutdown(self) -> None:
        """Stop a server started with start_in_thread."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def server_close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._close())  # idempotent after shutdown()
            self._loop.close()
