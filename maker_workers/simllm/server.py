"""The simulated LLM over HTTP/1.1, in the three shapes maker's providers speak: any POST path ending in
`/chat/completions` (OpenAI), `/messages` (Anthropic Messages) or `/api/chat` (Ollama); embeddings at
`/embeddings` (OpenAI) and `/api/embed` (Ollama), from `simllm.embed`; `GET /health`; and `GET /stats`,
what it has served, as a billing meter would count it.

Faults on demand (SimConfig): 429s with a Retry-After, 500s, requests held and then hung up on, polite
refusals, a wrong key, an exhausted account; rolled from their own seeded generator, so the answers
stay what they would be without them.

A small asyncio server: one event loop holds thousands of keep-alive connections from worker threads,
sleeps out the simulated latency without a thread per request, and spends little CPU per request, so a
benchmark on one machine measures the engine rather than its stand-in for a model.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from maker_workers.domains.answers import SIM_EMBEDDING_MODEL
from maker_workers.simllm.embed import embed
from maker_workers.simllm.model import Answer, SimConfig, SimModel, count_tokens

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
}
MAX_BODY = 1 << 20
ARRIVALS_KEPT = 100_000
# Each route's path ends so; any prefix will do (/v1, /api/v1, none).
_ROUTES = (("/chat/completions", "openai"), ("/messages", "anthropic"), ("/api/chat", "ollama"))
_EMBED_ROUTES = (("/embeddings", "openai"), ("/api/embed", "ollama"))
REFUSAL = "I'm sorry, but I can't help with that request."


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _response(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps(payload).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass(frozen=True)
class Reply:
    """One answer before it goes on the wire: the in-process sim hands it to httpx as it is."""

    status: int | str  # "timeout": the request is held, then hung up on (/stats counts it so)
    payload: dict[str, Any] | None  # None: hang up, answering nothing
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def hangs_up(self) -> bool:
        return self.payload is None or isinstance(self.status, str)

    def raw(self) -> bytes | None:
        """The HTTP response's bytes; None to hang up."""
        if self.hangs_up:
            return None
        return _response(self.status, self.payload, self.headers)


def _error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An error in OpenAI's shape, whatever the route: every provider adapter reads it."""
    error = {"message": message, "type": kind} | ({"code": code} if code else {})
    return Reply(status, {"error": error}, headers or {})


@dataclass(frozen=True)
class _Ask:
    """One chat request, whichever shape it came in."""

    model: str
    texts: list[str]  # every message's text, the system prompt's too: what the prompt tokens count
    prompt: str  # the last user message
    temperature: float
    max_tokens: int | None


def _text(content: Any) -> str:
    """A message's text: a string, or a list of content blocks (Anthropic, OpenAI's parts)."""
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return "" if content is None else str(content)


def _read(shape: str, request: dict[str, Any]) -> _Ask:
    messages = request["messages"]
    texts = [_text(m.get("content", "")) for m in messages]
    if shape == "anthropic" and request.get("system"):
        texts.append(_text(request["system"]))
    prompt = next(_text(m["content"]) for m in reversed(messages) if m.get("role") == "user")
    if shape == "ollama":
        options = request.get("options") or {}
        temperature, max_tokens = options.get("temperature", 1.0), options.get("num_predict")
        if max_tokens is not None and max_tokens < 0:  # -1: no limit
            max_tokens = None
    else:
        temperature, max_tokens = request.get("temperature", 1.0), request.get("max_tokens")
    model = str(request.get("model", "sim-hanoi"))
    return _Ask(model=model, texts=texts, prompt=prompt, temperature=float(temperature), max_tokens=max_tokens)


def _read_embed(request: dict[str, Any]) -> tuple[str, list[str]]:
    """(model, texts) of an embeddings request: `input` is one string or a list of them."""
    given = request["input"]
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("input must be a string or a non-empty list of strings")
    return str(request.get("model", SIM_EMBEDDING_MODEL)), texts


def _render_embed(shape: str, model: str, texts: list[str], tokens: int) -> dict[str, Any]:
    vectors = [embed(text) for text in texts]
    if shape == "ollama":
        return {"model": model, "embeddings": vectors, "prompt_eval_count": tokens}
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _render(shape: str, ask: _Ask, answer: Answer, prompt_tokens: int) -> dict[str, Any]:
    if shape == "anthropic":
        return {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": ask.model,
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": "max_tokens" if answer.truncated else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": answer.output_tokens},
        }
    if shape == "ollama":
        return {
            "model": ask.model,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "message": {"role": "assistant", "content": answer.text},
            "done_reason": "length" if answer.truncated else "stop",
            "done": True,
            "prompt_eval_count": prompt_tokens,
            "eval_count": answer.output_tokens,
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": ask.model,
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
    }


def _key_of(headers: dict[str, str]) -> str | None:
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip() or None


class Stats:
    """What the server has answered (GET /stats). Every request but reads of /health and /stats counts in
    `requests`, `arrivals` (its time.monotonic(), the last 100,000) and `by_status` ("timeout": hung up
    on); `by_model` counts those that named a model. Tokens count 200 answers only, as a bill would."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.input_tokens = 0
        self.output_tokens = 0
        self.by_model: dict[str, dict[str, int]] = {}
        self.arrivals: deque[float] = deque(maxlen=ARRIVALS_KEPT)  # time.monotonic() of each request

    def arrived(self) -> None:
        self.requests += 1
        self.arrivals.append(time.monotonic())

    def asked(self, model: str) -> None:
        self.by_model.setdefault(model, {"requests": 0, "input_tokens": 0, "output_tokens": 0})["requests"] += 1

    def served(self, model: str, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.by_model[model]["input_tokens"] += input_tokens
        self.by_model[model]["output_tokens"] += output_tokens

    def report(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "served": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
            "by_model": self.by_model,
            "arrivals": list(self.arrivals),
        }


class SimApp:
    """Turns one request into the delay before answering and its `Reply` (as bytes for a socket: `handle`)."""

    def __init__(self, config: SimConfig, stream: str = "") -> None:
        self.model = SimModel(config, stream)
        self.stats = Stats()
        # Apart from the answers' generator (and, like it, per stream).
        self._faults = random.Random(f"faults/{config.seed}/{stream}" if stream else f"faults/{config.seed}")

    def handle(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[float, bytes | None]:
        """(delay, the response's bytes, or None: hang up after the delay)."""
        delay, reply = self.reply(method, path, body, headers)
        return delay, reply.raw()

    def reply(self, method: str, path: str, body: bytes | Any, headers: dict[str, str]) -> tuple[float, Reply]:
        """(delay, the answer) to one request; `body` its bytes, or its JSON already parsed (the in-process sim's:
        no JSON round trip), which is only read. `headers` with names in lower case."""
        path = path.rstrip("/")
        if method == "GET" and path in ("/health", "/v1/health"):
            return 0.0, Reply(200, {"status": "ok", "config": self.model.config.model_dump()})
        if method == "GET" and path in ("/stats", "/v1/stats"):
            return 0.0, Reply(200, self.stats.report())
        self.stats.arrived()
        delay, reply = self._serve(method, path, body, headers)
        self.stats.by_status[str(reply.status)] += 1
        return delay, reply

    def _serve(self, method: str, path: str, body: bytes | Any, headers: dict[str, str]) -> tuple[float, Reply]:
        shape = next((shape for end, shape in _ROUTES if path.endswith(end)), None)
        embed_shape = next((shape for end, shape in _EMBED_ROUTES if path.endswith(end)), None)
        if method != "POST" or (shape or embed_shape) is None:
            routes = ", ".join(f"...{end}" for end, _ in _ROUTES + _EMBED_ROUTES)
            return 0.0, _error(404, f"no route {method} {path}; POST to {routes}")
        try:
            request = json.loads(body) if isinstance(body, bytes | bytearray) else body
            if embed_shape is not None:
                model, texts = _read_embed(request)
            else:
                ask = _read(shape or "openai", request)
                model = ask.model
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            return 0.0, _error(400, f"cannot answer this request: {exc!r}")
        self.stats.asked(model)
        cfg = self.model.config
        if cfg.api_key is not None and _key_of(headers) != cfg.api_key:
            return 0.0, _error(401, "Incorrect API key provided.", code="invalid_api_key")
        if cfg.quota_exhausted:
            quota = "You exceeded your current quota, please check your plan and billing details."
            return 0.0, _error(429, quota, "insufficient_quota", "insufficient_quota")
        fault = self._draw_fault()
        if fault == "429":
            wait = f"{cfg.retry_after_s:g}"
            limited = f"Rate limit reached for requests. Please try again in {wait}s."
            return 0.0, _error(429, limited, "requests", "rate_limit_exceeded", {"Retry-After": wait})
        if fault == "500":
            return 0.0, _error(500, "The server had an error while processing your request.", "server_error")
        if fault == "timeout":
            return cfg.timeout_hold_s, Reply("timeout", None)
        if embed_shape is not None:  # a refusal is a chat answer: embeddings have none
            tokens = sum(count_tokens(text) for text in texts)
            self.stats.served(model, tokens, 0)
            return self.model.latency_s(), Reply(200, _render_embed(embed_shape, model, texts, tokens))
        if fault == "refusal":
            answer = Answer(text=REFUSAL, output_tokens=count_tokens(REFUSAL), truncated=False)
        else:
            try:
                answer = self.model.answer(ask.prompt, ask.temperature, ask.max_tokens)
            except ValueError as exc:
                return 0.0, _error(400, f"cannot answer this request: {exc!r}")
        prompt_tokens = sum(count_tokens(text) for text in ask.texts)
        self.stats.served(ask.model, prompt_tokens, answer.output_tokens)
        return self.model.latency_s(), Reply(200, _render(shape, ask, answer, prompt_tokens))

    def _draw_fault(self) -> str | None:
        """One draw picks at most one fault, each with its configured share."""
        cfg = self.model.config
        roll = self._faults.random()
        shares = {"429": cfg.rate_429, "500": cfg.rate_500, "timeout": cfg.rate_timeout, "refusal": cfg.rate_refusal}
        for fault, share in shares.items():
            if roll < share:
                return fault
            roll -= share
        return None


class _Connection(asyncio.Protocol):
    """HTTP/1.1 keep-alive; requests on one connection are answered in order."""

    def __init__(self, app: SimApp, open_connections: set[_Connection]) -> None:
        self.app = app
        self.open_connections = open_connections
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[float, bytes | None] | None] = asyncio.Queue()
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
                self.queue.put_nowait((0.0, _error(exc.status, str(exc)).raw()))
                self.queue.put_nowait(None)  # close after answering: the stream is out of step
                self.buffer.clear()
                return
            if request is None:
                return
            self.queue.put_nowait(self.app.handle(*request))

    def _next_request(self) -> tuple[str, str, bytes, dict[str, str]] | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_BODY:
                raise HttpError(413, "request head too large")
            return None
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise HttpError(400, f"bad request line {lines[0]!r}")
        headers: dict[str, str] = {}
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
        return parts[0], parts[1], body, headers

    async def _write_in_order(self) -> None:
        while (item := await self.queue.get()) is not None:
            delay, response = item
            if delay:
                await asyncio.sleep(delay)
            if self.transport is None or self.transport.is_closing():
                return
            if response is None:  # a request picked to time out: hang up, answering nothing
                self.transport.close()
                return
            self.transport.write(response)
        if self.transport is not None:
            self.transport.close()


SIM_READY = "sim-llm listening on"  # `maker sim-llm serve` prints this and its URL once it accepts requests


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
