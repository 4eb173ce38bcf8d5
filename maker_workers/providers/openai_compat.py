"""Any server speaking OpenAI's chat completions API: OpenAI, vLLM, Ollama's /v1, our simulated LLM."""

from __future__ import annotations

from typing import Any

import httpx

from maker_workers.errors import ProviderError, RateLimited, Unavailable
from maker_workers.providers.base import Completion


class OpenAICompatible:
    def __init__(self, client: httpx.Client, *, base_url: str, model: str, api_key: str | None) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._omit_temperature = False  # set once the model has refused a temperature

    def complete(self, messages: list[dict[str, str]], *, temperature: float | None, max_tokens: int) -> Completion:
        omit = temperature is None or self._omit_temperature
        try:
            completion = self._post(messages, None if omit else temperature, max_tokens)
        except ProviderError as exc:
            if omit or not _rejects_temperature(exc):
                raise
            self._omit_temperature = omit = True
            completion = self._post(messages, None, max_tokens)
        completion.temperature_omitted = omit and temperature is not None
        return completion

    def _post(self, messages: list[dict[str, str]], temperature: float | None, max_tokens: int) -> Completion:
        body: dict[str, Any] = {"model": self._model, "messages": messages, "max_tokens": max_tokens}
        if temperature is not None:
            body["temperature"] = temperature
        try:
            response = self._client.post(self._url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{self._url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 429:
            raise RateLimited(f"{self._url}: rate limited (429)")
        if response.status_code >= 500:
            raise Unavailable(f"{self._url}: HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            raise ProviderError(f"{self._url}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            data = response.json()
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Completion(
                text=choice["message"]["content"] or "",
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
                truncated=choice.get("finish_reason") == "length",
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProviderError(f"{self._url}: answer is not a chat completion: {exc!r}") from exc


def _rejects_temperature(exc: ProviderError) -> bool:
    """Some models (reasoning models among them) answer 400 to any temperature but their default."""
    text = str(exc).lower()
    return "http 400" in text and "temperature" in text
