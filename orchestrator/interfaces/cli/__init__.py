"""The `maker` command line: run Hanoi or any task spec, take one vote, serve the simulated LLM, benchmark."""

from __future__ import annotations

import signal

from orchestrator.interfaces.cli import planning, reports, runs, services  # noqa: F401  (they register the commands)
from orchestrator.interfaces.cli.common import _stop_on, app

__all__ = ["app", "main"]


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on)
    app()
