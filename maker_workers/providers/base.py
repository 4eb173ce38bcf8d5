"""What every provider returns and promises."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel


class Completion(BaseModel):
    text: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0  # of input_tokens, those the provider read from its prompt cache
    cache_write_tokens: int = 0  # of input_tokens, those it wrote to its prompt cache (Anthropic bills a premium)
    truncated: bool = False  # the provider stopped at max_tokens
    temperature_omitted: bool = False  # the model refused a temperature, so none was sent


class Provider(Protocol):
    def complete(self, messages: list[dict[str, str]], *, temperature: float | None, max_tokens: int) -> Completion:
        """One chat completion. Raises RateLimited on 429, ProviderError on anything unusable.

        A model that refuses the temperature parameter is asked again without it, from then on,
        and the completion says so (`temperature_omitted`).
        """
        ...
