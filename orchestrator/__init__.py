"""Everything that drives a job: the run loop and voting policy, k planning, the CLI, reports, benchmarks."""
