"""The engine: the run loop, what it records in Redis, how it sends samples and how deep it guesses."""
