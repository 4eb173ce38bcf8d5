"""What a sample costs: the price table shipped in the package (data/prices.csv), or the user's own price.

Costs are counted in nano-dollars (integers), so Redis adds them exactly with HINCRBY: a million samples
of a few hundred tokens each sum to the cent with no float drift.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, Field

NANO = 1_000_000_000
_DATED = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")  # gpt-4.1-mini-2025-04-14, claude-haiku-4-5-20251001


class Price(BaseModel):
    """US dollars per million tokens; `cached` is the price of an input token read from the provider's prompt cache
    (None: the input price, as for a provider with no discount)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached: float | None = Field(None, ge=0)

    def cost_nusd(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """Nano-dollars for one call: $/Mtok is exactly 1,000 nano-dollars a token. `cached_tokens` are among the
        `input_tokens`, priced at the cached rate."""
        cached = min(cached_tokens, input_tokens)
        rate = self.input if self.cached is None else self.cached
        return round(1000 * (self.input * (input_tokens - cached) + rate * cached + self.output * output_tokens))


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
            return table[(provider, name)]
    return None


def usd(nusd: int) -> float:
    return round(nusd / NANO, 9)
