"""What a run has spent, as the workers' notices say, held against its budget (--max-cost-usd).

The vote script keeps the run's spend in Redis and every notice carries it, so the newest notice is the truth;
a sample of unknown price makes the spend unknown, and a budget cannot be kept then.
"""

from __future__ import annotations

from dataclasses import dataclass

from maker_workers.errors import BudgetSpent, ConfigError
from maker_workers.pricing import usd
from maker_workers.votes import Notice


@dataclass
class Spend:
    budget_usd: float | None  # None: no budget
    nusd: int = 0  # nano-dollars spent, as the newest notice says
    unknown: str | None = None  # the model whose price is unknown, once a sample says so

    @property
    def priced(self) -> bool:
        """The run's samples cost money: speculation then works within a waste budget."""
        return self.nusd > 0

    @property
    def spent_usd(self) -> float | None:
        """None once a sample's price was unknown."""
        return None if self.unknown is not None else usd(self.nusd)

    def hear(self, notice: Notice) -> None:
        if notice.spent_nusd is not None:
            self.nusd = max(self.nusd, notice.spent_nusd)
        if notice.cost_unknown is not None and self.unknown is None:
            self.unknown = notice.cost_unknown or "the workers' model"

    def check(self) -> None:
        """Before samples are sent: BudgetSpent once the budget is reached; a step decided within it commits."""
        if self.budget_usd is None:
            return
        if self.unknown is not None:
            raise ConfigError(
                f"the price of {self.unknown} is unknown, so --max-cost-usd cannot be kept: give the "
                "workers its price (--price-in/--price-out, or MAKER_PRICE_IN/MAKER_PRICE_OUT)"
            )
        if self.nusd >= round(self.budget_usd * 1e9):
            raise BudgetSpent(usd(self.nusd), self.budget_usd)
