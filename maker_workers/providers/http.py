"""What every HTTP provider shares: one JSON POST with errors mapped onto our tree, and the
temperature fallback for models that refuse one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import httpx

from maker_workers.errors import ProviderError, RateLimited, Unavailable
from maker_workers.providers.base import Completion


def post_json(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """POST and decode; 429 is RateLimited, 5xx and transport failures Unavailable, other 4xx ProviderError."""
    try:
        response = client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise Unavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code == 429:
        raise RateLimited(f"{url}: rate limited (429)")
    if response.status_code >= 500:
        raise Unavailable(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
    if response.status_code >= 400:
        raise ProviderError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
    try:
        data = response.json()
    except ValueError as exc:
        raise ProviderError(f"{url}: answer is not JSON: {response.text[:200]!r}") from exc
    if not isinstance(data, dict):
        raise ProviderError(f"{url}: answer is not a JSON object")
    return data


class HttpProvider(ABC):
    """A provider over HTTP. Subclasses say how to ask (`_ask`); this class handles temperature."""

    def __init__(self) -> None:
        self._omit_temperature = False  # set once the model has refused a temperature

    def complete(self, messages: list[dict[str, str]], *, temperature: float | None, max_tokens: int) -> Completion:
        omit = temperature is None or self._omit_temperature
        try:
            completion = self._ask(messages, None if omit else temperature, max_tokens)
        except ProviderError as exc:
            if omit or not _rejects_temperature(exc):
                raise
            self._omit_temperature = omit = True
            completion = self._ask(messages, None, max_tokens)
        completion.temperature_omitted = omit and temperature is not None
        return completion

    @abstractmethod
    def _ask(self, messages: list[dict[str, str]], temperature: float | None, max_tokens: int) -> Completion:
        """One request; temperature None means: send none."""


def _rejects_temperature(exc: ProviderError) -> bool:
    """Some models (reasoning models among them) answer 400 to any temperature but their default."""
    text = str(exc).lower()
    return "http 400" in text and "temperature" in text
