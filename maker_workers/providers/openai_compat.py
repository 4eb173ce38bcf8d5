"""Any server speaking OpenAI's chat completions API: OpenAI, vLLM, Ollama's /v1, our simulated LLM."""

from __future__ import annotations

from typing import Any

import httpx

from maker_workers.errors import ProviderError
from maker_workers.providers.base import Completion
from maker_workers.providers.http import HttpProvider, post_json


class OpenAICompatible(HttpProvider):
    """`name` is the provider our messages name: "openai" for any such server, "sim" for ours."""

    def __init__(
        self, client: httpx.Client, *, base_url: str, model: str, api_key: str | None, name: str = "openai"
    ) -> None:
        super().__init__()
        self._client = client
        self._name = name
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _ask(self, messages: list[dict[str, str]], temperature: float | None, max_tokens: int) -> Completion:
        body: dict[str, Any] = {"model": self._model, "messages": messages, "max_tokens": max_tokens}
        if temperature is not None:
            body["temperature"] = temperature
        data = post_json(self._client, self._url, body, self._headers, provider=self._name)
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            return Completion(
                # A refusal (message.refusal set) comes with no content: an empty answer, red-flagged.
                text=choice["message"]["content"] or "",
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
                cached_tokens=int(cached),  # OpenAI counts them inside prompt_tokens
                truncated=choice.get("finish_reason") == "length",
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProviderError(f"{self._name} at {self._url}: answer is not a chat completion: {exc!r}") from exc
