"""Everything that drives a job: the run loop and voting policy, k planning, the CLI, reports, benchmarks."""

from importlib import metadata

try:
    VERSION = metadata.version("maker")  # the installed package's, as pip knows it
except metadata.PackageNotFoundError:  # a checkout run without installing it
    VERSION = "0+unknown"
