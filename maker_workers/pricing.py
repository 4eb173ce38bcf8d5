"""What a sample costs: the price table shipped in the package (data/prices.csv), or the user's own price.

Costs are counted in nano-dollars (integers), so Redis adds them exactly with HINCRBY: a million samples
of a few hundred tokens each sum to the cent with no float drift.

Prompt caches bill three kinds of input token: fresh ones at the input price, ones read from the cache at the
cached price (the table's fifth column), and ones written to it. OpenAI and llama.cpp write for free; Anthropic
bills a write of its 5-minute cache at 1.25 times the input price, whatever the model: that premium is a
provider's, not a model's (`CACHE_WRITE_PREMIUM`), and applies to the user's own --price-in as to the table's.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, Field

NANO = 1_000_000_000
# The price of writing an input token to the prompt cache, as a multiple of the input price (a provider not here: 1).
CACHE_WRITE_PREMIUM = {"anthropic": 1.25}
_DATED = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")  # gpt-4.1-mini-2025-04-14, claude-haiku-4-5-20251001


class Price(BaseModel):
    """US dollars per million tokens; `cached` is the price of an input token read from the provider's prompt cache
    (None: the input price, as for a provider with no discount), `cache_write` of one written to it (None: the
    input price)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)

    def cost_nusd(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0, written_tokens: int = 0) -> int:
        """Nano-dollars for one call: $/Mtok is exactly 1,000 nano-dollars a token. `cached_tokens` (read from the
        cache) and `written_tokens` (written to it) are among the `input_tokens`, each priced at its own rate."""
        cached = min(cached_tokens, input_tokens)
        written = min(written_tokens, input_tokens - cached)
        read_rate = self.input if self.cached is None else self.cached
        write_rate = self.input if self.cache_write is None else self.cache_write
        fresh = input_tokens - cached - written
        return round(
            1000 * (self.input * fresh + read_rate * cached + write_rate * written + self.output * output_tokens)
        )


def for_provider(provider: str, price: Price) -> Price:
    """`price` with its cache writes priced as `provider` bills them, unless it names a write price of its own."""
    premium = CACHE_WRITE_PREMIUM.get(provider)
    if price.cache_write is not None or premium is None:
        return price
    return price.model_copy(update={"cache_write": round(price.input * premium, 9)})


@lru_cache(maxsize=1)
def _table() -> dict[tuple[str, str], Price]:
    text = resources.files("maker_workers").joinpath("data/prices.csv").read_text()
    rows = csv.reader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    table = {}
    for provider, model, i, o, *cached in rows:
        price = Price(input=float(i), output=float(o), cached=float(cached[0]) if cached and cached[0] else None)
        table[(provider, model)] = price
    return table


def price_of(provider: str, model: str) -> Price | None:
    """The listed price of a model (a dated snapshot is priced as its model); None when not listed:
    an unknown model's cost is unknown, never guessed."""
    table = _table()
    for name in (model, _DATED.sub("", model), "*"):
        if (provider, name) in table:
            return for_provider(provider, table[(provider, name)])
    return None


def usd(nusd: int) -> float:
    return round(nusd / NANO, 9)
