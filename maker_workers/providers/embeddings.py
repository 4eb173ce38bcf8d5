"""Embedding models, for votes on meaning (answer.match: semantic): OpenAI's `/embeddings` (OpenAI, vLLM,
Ollama's /v1, the simulated LLM) and Ollama's native `/api/embed`. Failures are mapped as completions' are
(providers.http.post_json), so the worker retries, waits and gives up on them the same way."""

from __future__ import annotations

from typing import Protocol

import httpx
from pydantic import BaseModel

from maker_workers.errors import ProviderError
from maker_workers.providers.http import post_json


class Embedding(BaseModel):
    vector: list[float]
    tokens: int  # what the provider counted (and bills)


class EmbeddingModel(Protocol):
    def embed(self, text: str) -> Embedding:
        """One text's vector. Raises RateLimited on 429, ProviderError on anything unusable."""
        ...


def _vector(value: object, provider: str, url: str) -> list[float]:
    if not isinstance(value, list) or not value or not all(isinstance(x, int | float) for x in value):
        raise ProviderError(f"{provider} at {url}: the answer holds no embedding vector")
    return [float(x) for x in value]


class OpenAIEmbeddings:
    """`POST {base}/embeddings`; `name` is the provider our messages name ("openai", "sim")."""

    def __init__(
        self, client: httpx.Client, *, base_url: str, model: str, api_key: str | None, name: str = "openai"
    ) -> None:
        self._client = client
        self._name = name
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def embed(self, text: str) -> Embedding:
        data = post_json(
            self._client, self._url, {"model": self._model, "input": [text]}, self._headers, provider=self._name
        )
        try:
            vector = data["data"][0]["embedding"]
            usage = data.get("usage") or {}
            tokens = int(usage.get("prompt_tokens", usage.get("total_tokens", 0)))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProviderError(f"{self._name} at {self._url}: answer is not an embedding: {exc!r}") from exc
        return Embedding(vector=_vector(vector, self._name, self._url), tokens=tokens)


class OllamaEmbeddings:
    """Ollama's native `POST {base}/api/embed`; a key, if given (an Ollama behind a proxy), goes as a Bearer token."""

    def __init__(self, client: httpx.Client, *, base_url: str, model: str, api_key: str | None) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/api/embed"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def embed(self, text: str) -> Embedding:
        data = post_json(
            self._client, self._url, {"model": self._model, "input": [text]}, self._headers, provider="ollama"
        )
        try:
            vector = data["embeddings"][0]
            tokens = int(data.get("prompt_eval_count", 0))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProviderError(f"ollama at {self._url}: answer is not an embedding: {exc!r}") from exc
        return Embedding(vector=_vector(vector, "ollama", self._url), tokens=tokens)
