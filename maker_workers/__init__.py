"""Everything a worker machine runs: the Celery app and sample task, providers, red flags, Lua, domains."""
