"""LLM providers: one module each, all behind the Provider protocol."""

from __future__ import annotations

import httpx

from maker_workers.errors import ConfigError
from maker_workers.providers.base import Completion, Provider
from maker_workers.providers.openai_compat import OpenAICompatible
from maker_workers.settings import WorkerSettings

__all__ = ["Completion", "Provider", "make_provider"]

NAMES = ("sim", "openai")


def make_provider(settings: WorkerSettings, client: httpx.Client) -> Provider:
    """The provider the settings name. `sim` is the simulated LLM, spoken to like any OpenAI server."""
    if settings.provider == "sim":
        return OpenAICompatible(client, base_url=settings.base_url, model=settings.model, api_key=None)
    if settings.provider == "openai":
        if not settings.api_key:
            raise ConfigError("provider 'openai' needs an API key: set MAKER_API_KEY in the environment")
        return OpenAICompatible(client, base_url=settings.base_url, model=settings.model, api_key=settings.api_key)
    raise ConfigError(f"unknown provider {settings.provider!r}: set MAKER_PROVIDER to one of {NAMES}")
