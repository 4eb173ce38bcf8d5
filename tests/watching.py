"""Awaiting what a user would look at: a condition polled until a deadline, and Flower's JSON API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def until(check: Callable[[], T], timeout: float, what: str) -> T:
    """The first truthy value `check` returns, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last seen: {found!r})")
        time.sleep(0.2)


class Flower:
    """What a user reads from Flower: its API (`/api/...`) and its workers page as JSON."""

    def __init__(self, url: str, auth: tuple[str, str] | None) -> None:
        self.http = httpx.Client(base_url=url, auth=auth, timeout=10)
        self.seen = ""  # every body read, to check that no secret was ever in one

    def get(self, path: str, **params: Any) -> Any:
        answer = self.http.get(path, params=params)
        answer.raise_for_status()
        self.seen += answer.text
        return answer.json()

    def workers(self) -> dict[str, Any]:
        """`/api/workers`: each worker Flower got an inspect reply from, with its pool and processed totals."""
        return self.get("/api/workers")

    def online(self) -> dict[str, Any]:
        """The workers page (`/workers`): each worker with its status, from heartbeats and task events."""
        return {worker["hostname"]: worker for worker in self.get("/workers", json=1)["data"]}

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        """`/api/tasks`: the run's sample tasks Flower heard of, each with its args and worker."""
        tasks = self.get("/api/tasks", taskname="maker.sample", limit=100_000).values()
        return [task for task in tasks if f"run={run_id} " in f"{task['args']} "]

    def close(self) -> None:
        self.http.close()
