"""Anthropic's Messages API: the system prompt travels apart from the messages, the key in x-api-key."""

from __future__ import annotations

from typing import Any

import httpx

from maker_workers.errors import ProviderError
from maker_workers.providers.base import Completion
from maker_workers.providers.http import HttpProvider, post_json

API_VERSION = "2023-06-01"


class Anthropic(HttpProvider):
    def __init__(self, client: httpx.Client, *, base_url: str, model: str, api_key: str | None) -> None:
        super().__init__()
        self._client = client
        self._url = base_url.rstrip("/") + "/messages"
        self._model = model
        self._headers = {"anthropic-version": API_VERSION} | ({"x-api-key": api_key} if api_key else {})

    def _ask(self, messages: list[dict[str, str]], temperature: float | None, max_tokens: int) -> Completion:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": max_tokens,
            "messages": [m for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = system
        if temperature is not None:
            body["temperature"] = temperature
        data = post_json(self._client, self._url, body, self._headers, provider="anthropic")
        try:
            text = "".join(block["text"] for block in data["content"] if block.get("type") == "text")
            usage = data.get("usage") or {}
            # Anthropic counts cache reads and writes apart from input_tokens; every one was a prompt token.
            cached = int(usage.get("cache_read_input_tokens") or 0)
            written = int(usage.get("cache_creation_input_tokens") or 0)
            return Completion(
                text=text,
                input_tokens=int(usage.get("input_tokens", 0)) + cached + written,
                cached_tokens=cached,
                output_tokens=int(usage.get("output_tokens", 0)),
                truncated=data.get("stop_reason") == "max_tokens",
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(f"anthropic at {self._url}: answer is not a message: {exc!r}") from exc
