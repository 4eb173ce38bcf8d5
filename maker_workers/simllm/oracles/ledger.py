"""One line of a ledger: the running balance plus one entry, in exact decimal arithmetic.

Reads `Balance:` and `Entry:` lines; the answer ends with a line `BALANCE: <new balance, two decimals>`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from decimal import Decimal

from maker_workers.simllm.oracles.base import FILLER, Oracle

_AMOUNT = r"([+-]?\d+\.\d{2})"
_BALANCE = re.compile(rf"^Balance:\s*{_AMOUNT}\s*$", re.M)
_ENTRY = re.compile(rf"^Entry:\s*{_AMOUNT}\s*$", re.M)
_CENT = Decimal("0.01")
_SLIPS = [Decimal(s) for s in ("0.10", "1.00", "10.00", "100.00")]


def money(value: Decimal) -> str:
    """Two decimals, and never '-0.00'."""
    return "0.00" if value == 0 else f"{value:.2f}"


@dataclass(frozen=True)
class LedgerProblem:
    balance: Decimal
    entry: Decimal
    filler: str = FILLER

    def right(self, rng: random.Random) -> Decimal:
        return self.balance + self.entry

    def mistake(self) -> Decimal | None:
        """The entry's sign flipped: a debit booked as a credit or the other way round."""
        return self.balance - self.entry if self.entry else None

    def corrupt(self, right: Decimal) -> Decimal:
        """A cent lost: the kind of slip a rounding habit makes."""
        return right - _CENT

    def other(self, right: Decimal, mistake: Decimal | None, rng: random.Random) -> Decimal:
        while True:
            answer = right + rng.choice((-1, 1)) * rng.choice(_SLIPS)
            if answer not in (right, mistake):
                return answer

    def render(self, answer: Decimal) -> str:
        sign = "-" if self.entry < 0 else "+"
        return f"{money(self.balance)} {sign} {money(abs(self.entry))} = {money(answer)}\nBALANCE: {money(answer)}"

    def malformed(self, answer: Decimal, rng: random.Random) -> str:
        text = money(answer)
        return rng.choice(
            [
                f"BALANCE: {text[:-1]}",
                f"BALANCE: {text.split('.')[0]}",
                f"BALANCE: {text.replace('.', ',')}",
                f"The running total is now {text}.",
            ]
        )


def read(prompt: str) -> LedgerProblem | None:
    balances, entries = _BALANCE.findall(prompt), _ENTRY.findall(prompt)
    if not balances or not entries:
        return None
    return LedgerProblem(Decimal(balances[-1]), Decimal(entries[-1]))


ORACLE = Oracle("ledger", "'Balance:' and 'Entry:' lines with two decimals", read)
