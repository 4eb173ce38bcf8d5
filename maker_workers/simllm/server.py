"""The simulated LLM over HTTP: `POST /v1/chat/completions` (with `usage`) and `GET /health`."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from maker_workers.simllm.model import SimConfig, SimModel, count_tokens


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per worker thread, reused
    disable_nagle_algorithm = True  # headers and body go out as separate writes; no 40 ms stall
    server: SimServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/health", "/v1/health"):
            self._send(200, {"status": "ok", "config": self.server.model.config.model_dump()})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route {self.path}; use POST /v1/chat/completions")
            return
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            messages = request["messages"]
            prompt = next(m["content"] for m in reversed(messages) if m.get("role") == "user")
            temperature = float(request.get("temperature", 1.0))
            max_tokens = request.get("max_tokens")
            answer = self.server.model.answer(prompt, temperature, max_tokens)
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            self._error(400, f"cannot answer this request: {exc!r}")
            return
        prompt_tokens = sum(count_tokens(m.get("content", "")) for m in messages)
        delay = self.server.model.latency_s()
        if delay:
            time.sleep(delay)
        self._send(
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


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, config: SimConfig) -> None:
        super().__init__((host, port), _Handler)
        self.model = SimModel(config)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="sim-llm", daemon=True)
        thread.start()
        return thread
