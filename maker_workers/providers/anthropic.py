"""Anthropic's Messages API: the system prompt travels apart from the messages, the key in x-api-key.

Prompt caching. Every sample of a run sends the same system prompt, so a long one is marked for Anthropic's
prompt cache (`cache_control: {"type": "ephemeral"}`, the 5-minute cache): the first call writes it, at 1.25 times
the input price, and the calls of the next five minutes read it at a tenth. Anthropic caches nothing shorter than
a model's minimum (1,024 tokens; 2,048 for Haiku models) and ignores the mark, at no charge, so the mark is sent
only where the system prompt may reach that minimum by a generous estimate (`cacheable`): a short prompt's request
stays a plain string, which every server speaking this API takes.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from maker_workers.errors import ProviderError
from maker_workers.providers.base import Completion
from maker_workers.providers.http import HttpProvider, post_json

API_VERSION = "2023-06-01"
CACHE_MINIMUM_TOKENS = 1024  # Sonnet and Opus models cache no shorter prefix
HAIKU_CACHE_MINIMUM_TOKENS = 2048  # nor Haiku models a shorter one (Haiku 4.5: 4,096; the mark is free below it)
# Claude's tokens run 3.5 to 4 characters of English; counting 3 errs toward marking, which is free when wrong,
# while a long prompt left unmarked pays ten times the cached price on every read.
CHARS_PER_TOKEN = 3
EPHEMERAL = {"type": "ephemeral"}


def cache_minimum(model: str) -> int:
    """The fewest tokens a prompt prefix of `model` needs to be cached."""
    return HAIKU_CACHE_MINIMUM_TOKENS if "haiku" in model.lower() else CACHE_MINIMUM_TOKENS


def cacheable(system: str, model: str) -> bool:
    """Whether a system prompt is long enough, by estimate, to be worth a cache mark."""
    return math.ceil(len(system) / CHARS_PER_TOKEN) >= cache_minimum(model)


class Anthropic(HttpProvider):
    """`prompt_cache` marks a long system prompt for the provider's prompt cache (see the module's docstring)."""

    def __init__(
        self, client: httpx.Client, *, base_url: str, model: str, api_key: str | None, prompt_cache: bool = True
    ) -> None:
        super().__init__()
        self._client = client
        self._url = base_url.rstrip("/") + "/messages"
        self._model = model
        self._prompt_cache = prompt_cache
        self._headers = {"anthropic-version": API_VERSION} | ({"x-api-key": api_key} if api_key else {})

    def _system(self, system: str) -> str | list[dict[str, Any]]:
        if self._prompt_cache and cacheable(system, self._model):
            return [{"type": "text", "text": system, "cache_control": EPHEMERAL}]
        return system

    def _ask(self, messages: list[dict[str, str]], temperature: float | None, max_tokens: int) -> Completion:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": max_tokens,
            "messages": [m for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = self._system(system)
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
                cache_write_tokens=written,
                output_tokens=int(usage.get("output_tokens", 0)),
                truncated=data.get("stop_reason") == "max_tokens",
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(f"anthropic at {self._url}: answer is not a message: {exc!r}") from exc
