"""Everything that drives a job, in rooms by role:

- engine/      the run loop (runner.py), what it records in Redis (store.py), how it sends samples (publisher.py),
               how deep it guesses (speculation.py) and the join rule of votes on meaning (meanings.py);
- cluster/     the embedded default, connections to a real cluster, Flower, local models, Prometheus, the bench;
- planning/    the method's formulas, k for a target, calibration, the live reliability reading;
- reports/     what a run did (text, JSON, HTML, plots), its audit, samples, progress and status;
- interfaces/  the front doors: the CLI, the MCP server, the Python API (`from orchestrator import api`), jobs.

Where a vote is decided: maker_workers/lua/record_sample.lua (the workers' side). Where a step is committed:
engine/runner.py, `Runner._commit`, through engine/store.py and maker_workers/lua/commit_step.lua. Where a
command is defined: interfaces/cli/ (a module per group of commands; the option types in common.py).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """`VERSION` (the installed package's, read on first use: importlib.metadata takes a tenth of what
    `maker --help` may) and `api` (the Python API under its short name), imported only when asked for."""
    if name == "api":
        from orchestrator.interfaces import api

        return api
    if name != "VERSION":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("maker")
    except metadata.PackageNotFoundError:  # a checkout run without installing it
        version = "0+unknown"
    globals()["VERSION"] = version
    return version
