"""What every provider returns and promises."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel


class Completion(BaseModel):
    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool = False  # the provider stopped at max_tokens


class Provider(Protocol):
    def complete(self, messages: list[dict[str, str]], *, temperature: float | None, max_tokens: int) -> Completion:
        """One chat completion. Raises RateLimited on 429, ProviderError on anything unusable."""
        ...
