"""LLM providers: one module each, all behind the Provider protocol."""

from __future__ import annotations

import httpx

from maker_workers.errors import ConfigError
from maker_workers.providers.anthropic import Anthropic
from maker_workers.providers.base import Completion, Provider
from maker_workers.providers.http import key_variables
from maker_workers.providers.ollama import Ollama
from maker_workers.providers.openai_compat import OpenAICompatible
from maker_workers.settings import WorkerSettings

__all__ = ["Completion", "Provider", "api_key_for", "make_provider", "provider_for"]

# Where each provider is reached unless a base URL says otherwise.
DEFAULT_URLS = {
    "sim": "http://127.0.0.1:8765/v1",
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "ollama": "http://127.0.0.1:11434",
}
NAMES = tuple(DEFAULT_URLS)


def api_key_for(name: str, settings: WorkerSettings) -> str | None:
    """The key to send provider `name`: its own variable (OPENAI_API_KEY, ANTHROPIC_API_KEY) first, so
    an ensemble never sends one provider's key to another; MAKER_API_KEY when that is unset. The
    simulated LLM gets none, so a real key stays home."""
    if name == "sim":
        return None
    own = {"openai": settings.openai_api_key, "anthropic": settings.anthropic_api_key}.get(name)
    return own or settings.api_key


def provider_for(
    name: str,
    model: str,
    base_url: str | None,
    api_key: str | None,
    client: httpx.Client,
    *,
    prompt_cache: bool = True,
) -> Provider:
    """Provider `name` serving `model` at `base_url` (None: the provider's default).

    `sim` is the simulated LLM, spoken to like any OpenAI server; `openai` is any OpenAI-compatible
    server (OpenAI, vLLM, Ollama's /v1, llama.cpp's server); `ollama` is Ollama's native API. openai and
    anthropic need a key at their own APIs; a server at another base URL (a local one) may need none.
    `prompt_cache` lets anthropic mark a long system prompt for its prompt cache (the others cache on their own).
    """
    if name not in DEFAULT_URLS:
        raise ConfigError(f"unknown provider {name!r}: use one of {', '.join(NAMES)}")
    url = base_url or DEFAULT_URLS[name]
    if name == "ollama":
        return Ollama(client, base_url=url, model=model, api_key=api_key)
    if name == "sim":
        return OpenAICompatible(client, base_url=url, model=model, api_key=api_key, name=name)
    if not api_key and url == DEFAULT_URLS[name]:
        own, *others = key_variables(name)
        raise ConfigError(f"provider {name!r} needs an API key: set {own} (or {' or '.join(others)})")
    if name == "anthropic":
        return Anthropic(client, base_url=url, model=model, api_key=api_key, prompt_cache=prompt_cache)
    return OpenAICompatible(client, base_url=url, model=model, api_key=api_key, name=name)


def make_provider(settings: WorkerSettings, client: httpx.Client) -> Provider:
    """The provider the worker settings name (MAKER_PROVIDER, MAKER_MODEL, MAKER_BASE_URL, MAKER_PROMPT_CACHE and
    a key)."""
    if settings.provider not in DEFAULT_URLS:
        raise ConfigError(f"unknown provider {settings.provider!r}: set MAKER_PROVIDER to one of {', '.join(NAMES)}")
    key = api_key_for(settings.provider, settings)
    return provider_for(
        settings.provider, settings.model, settings.base_url, key, client, prompt_cache=settings.prompt_cache
    )
