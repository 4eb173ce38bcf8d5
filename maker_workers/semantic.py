"""Votes on meaning (answer.match: semantic): what of an answer is embedded, what must still match exactly,
and the embedding model a worker calls for it.

The worker embeds the parsed answer and hands the unit vector to the vote script (lua/semantic.lua), which
assigns it to its contest's nearest candidate at or above the threshold, or opens a new one, in the same
atomic call that counts the vote. Nothing here ranks or clusters: Redis does, once, for every worker.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import httpx
import redis

from maker_workers.domains.answers import SemanticMatch, parse_embeddings
from maker_workers.domains.base import RedFlag
from maker_workers.errors import ConfigError
from maker_workers.pricing import Price, price_of
from maker_workers.providers import DEFAULT_URLS, api_key_for
from maker_workers.providers.embeddings import Embedding, EmbeddingModel, OllamaEmbeddings, OpenAIEmbeddings
from maker_workers.ratelimit import RateLimiter
from maker_workers.settings import WorkerSettings
from maker_workers.votes import Meaning


def unit(values: list[float]) -> list[float]:
    """The vector scaled to length 1; ValueError when it has no direction."""
    norm = math.sqrt(math.fsum(x * x for x in values))
    if not norm or not math.isfinite(norm):
        raise ValueError("the embedding is all zeros or not finite")
    return [x / norm for x in values]


def unit_vector(values: list[float]) -> bytes:
    """The vector scaled to length 1, packed as little-endian float32: normalised once, here, so the vote
    script's cosine is a plain dot product."""
    return struct.pack(f"<{len(values)}f", *unit(values))


@dataclass(frozen=True)
class Embedder:
    """The embedding model a worker calls, with its shared rate limit and price, as a completion model has."""

    label: str  # "provider:model"
    model: EmbeddingModel
    limiter: RateLimiter | None
    price: Price | None  # None: unknown, so the vote's cost is unknown

    def meaning(self, match: SemanticMatch, group: str, embedding: Embedding) -> Meaning:
        try:
            vector = unit_vector(embedding.vector)
        except ValueError as exc:
            raise RedFlag("embedding", str(exc)) from exc
        cost = None if self.price is None else self.price.cost_nusd(embedding.tokens, 0)
        return Meaning(
            vector=vector,
            group=group,
            threshold=match.threshold,
            open_below=match.open_below,
            max_candidates=match.max_candidates,
            tokens=embedding.tokens,
            cost_nusd=cost,
        )


def embedder_for(
    embeddings: str, settings: WorkerSettings, client: redis.Redis, http: httpx.Client, base_url: str | None = None
) -> Embedder:
    """The embedding model `embeddings` names, at `base_url` when the task gives one (answer.embeddings_base_url),
    else reached as the worker's settings say: the worker's base URL serves it when the worker's provider is the
    same one; `sim` is the simulated LLM's."""
    try:
        provider, model = parse_embeddings(embeddings)
    except ValueError as exc:
        raise ConfigError(f"answer.embeddings: {exc}") from None
    own = settings.base_url if settings.provider == provider else None
    url = base_url or own or (settings.sim_base_url if provider == "sim" else None) or DEFAULT_URLS[provider]
    # The worker's key goes only where the worker itself would send it: the provider's own API, or the base URL of
    # its settings. A URL a task names (a spec can come from anyone, through MCP) gets none.
    key = api_key_for(provider, settings) if url in (DEFAULT_URLS[provider], settings.base_url) else None
    if provider == "ollama":
        embedding_model: EmbeddingModel = OllamaEmbeddings(http, base_url=url, model=model, api_key=key)
    else:
        if provider == "openai" and not key and url == DEFAULT_URLS["openai"]:
            raise ConfigError(
                "answer.embeddings: openai embeddings need an API key: set OPENAI_API_KEY (or MAKER_API_KEY)"
            )
        embedding_model = OpenAIEmbeddings(http, base_url=url, model=model, api_key=key, name=provider)
    limits = settings.provider_limits
    limiter = None if limits is None else RateLimiter(client, provider, model, limits)
    return Embedder(f"{provider}:{model}", embedding_model, limiter, price_of(provider, model))
