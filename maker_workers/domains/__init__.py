"""Tasks: the plug-in point. Each implements `base.Task`; `load_task` rebuilds one from its definition."""

from __future__ import annotations

from typing import Any

from maker_workers.domains.base import Task

__all__ = ["Task", "load_task"]
from maker_workers.errors import ConfigError


def load_task(definition: dict[str, Any]) -> Task:
    """The task a run's stored definition names (workers call this once per run)."""
    kind = definition.get("kind")
    if kind == "hanoi":
        from maker_workers.domains.hanoi import HanoiTask

        return HanoiTask(int(definition["disks"]))
    if kind == "spec":
        from maker_workers.domains.spec import SpecTask

        return SpecTask.from_definition(definition)
    raise ConfigError(f"unknown task kind {kind!r} in a run's definition: this worker knows hanoi and spec")
