"""Ollama's native chat API (`POST /api/chat`): sampling settings travel in `options`, the token limit
as `num_predict`, and the answer says when it stopped at that limit (`done_reason` "length")."""

from __future__ import annotations

from typing import Any

import httpx

from maker_workers.errors import ProviderError
from maker_workers.providers.base import Completion
from maker_workers.providers.http import HttpProvider, post_json


class Ollama(HttpProvider):
    """A local Ollama needs no key; one given (an Ollama behind a proxy) goes as a Bearer token."""

    def __init__(self, client: httpx.Client, *, base_url: str, model: str, api_key: str | None) -> None:
        super().__init__()
        self._client = client
        self._url = base_url.rstrip("/") + "/api/chat"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _ask(self, messages: list[dict[str, str]], temperature: float | None, max_tokens: int) -> Completion:
        options: dict[str, Any] = {"num_predict": max_tokens}
        if temperature is not None:
            options["temperature"] = temperature
        body = {"model": self._model, "messages": messages, "stream": False, "options": options}
        data = post_json(self._client, self._url, body, self._headers, provider="ollama")
        try:
            return Completion(
                text=data["message"]["content"] or "",
                # Ollamas before mid-2024 left prompt_eval_count out for a cached prompt (ollama#2068).
                input_tokens=int(data.get("prompt_eval_count", 0)),
                output_tokens=int(data.get("eval_count", 0)),
                truncated=data.get("done_reason") == "length",
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(f"ollama at {self._url}: answer is not a chat message: {exc!r}") from exc
