"""LLM providers: one module each, all behind the Provider protocol."""

from __future__ import annotations

import httpx

from maker_workers.errors import ConfigError
from maker_workers.providers.anthropic import Anthropic
from maker_workers.providers.base import Completion, Provider
from maker_workers.providers.openai_compat import OpenAICompatible
from maker_workers.settings import WorkerSettings

__all__ = ["Completion", "Provider", "make_provider"]

# Where each provider is reached unless MAKER_BASE_URL says otherwise.
DEFAULT_URLS = {
    "sim": "http://127.0.0.1:8765/v1",
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
NAMES = tuple(DEFAULT_URLS)


def make_provider(settings: WorkerSettings, client: httpx.Client) -> Provider:
    """The provider the settings name. `sim` is the simulated LLM, spoken to like any OpenAI server;
    `openai` is any OpenAI-compatible server (OpenAI, vLLM, Ollama's /v1) given its MAKER_BASE_URL."""
    name = settings.provider
    if name not in DEFAULT_URLS:
        raise ConfigError(f"unknown provider {name!r}: set MAKER_PROVIDER to one of {', '.join(NAMES)}")
    base_url = settings.base_url or DEFAULT_URLS[name]
    if name == "sim":
        return OpenAICompatible(client, base_url=base_url, model=settings.model, api_key=None)
    if not settings.api_key:
        raise ConfigError(f"provider {name!r} needs an API key: set MAKER_API_KEY in the environment")
    if name == "anthropic":
        return Anthropic(client, base_url=base_url, model=settings.model, api_key=settings.api_key)
    return OpenAICompatible(client, base_url=base_url, model=settings.model, api_key=settings.api_key)
