"""The tasks the simulated model can answer, each read from the user prompt by its oracle (first match wins)."""

from __future__ import annotations

from typing import Any

from maker_workers.simllm.oracles import arithmetic, hanoi, ledger, multiply, sort, triage
from maker_workers.simllm.oracles.base import Oracle, Problem

ORACLES: tuple[Oracle, ...] = (
    hanoi.ORACLE,
    multiply.ORACLE,
    sort.ORACLE,
    ledger.ORACLE,
    triage.ORACLE,
    arithmetic.ORACLE,
)

__all__ = ["ORACLES", "Oracle", "Problem", "read_prompt"]


def read_prompt(prompt: str) -> Problem[Any]:
    """The problem a user prompt poses; ValueError (HTTP 400) naming what the oracles look for if none knows it."""
    for oracle in ORACLES:
        problem = oracle.read(prompt)
        if problem is not None:
            return problem
    cues = "; ".join(f"{oracle.name}: {oracle.cue}" for oracle in ORACLES)
    raise ValueError(f"no oracle recognises this prompt; the simulated model reads ({cues})")
