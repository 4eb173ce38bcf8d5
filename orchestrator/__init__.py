"""Everything that drives a job: the run loop and voting policy, k planning, the CLI, reports, benchmarks."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`VERSION`, the installed package's as pip knows it, read on first use: importlib.metadata takes a tenth of
    what `maker --help` may, and only `--version`, reports and the MCP server need it."""
    if name != "VERSION":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("maker")
    except metadata.PackageNotFoundError:  # a checkout run without installing it
        version = "0+unknown"
    globals()["VERSION"] = version
    return version
