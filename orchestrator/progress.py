"""Progress bars on stderr: a run's (steps/s, samples, red flags, rounds, cost, the reliability the votes imply)
and a calibration's (samples heard of, votes, red flags, errors)."""

from __future__ import annotations

import time
from collections import Counter
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from maker_workers.votes import Notice, Outcome
from orchestrator.runner import CommittedStep


class _Bar:
    """A rich progress bar drawn while the `with` lasts."""

    _progress: Progress

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()


class StepProgress(_Bar):
    def __init__(self, console: Console, total: int | None, completed: int = 0) -> None:
        """`total` None draws a bar without an end, for tasks done when a condition holds."""
        self._progress = Progress(
            TextColumn("[bold]steps"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn(
                "{task.fields[rate]:.1f} steps/s  samples {task.fields[samples]}  "
                "red flags {task.fields[red_flags]}  max rounds {task.fields[rounds]}  {task.fields[cost]}  "
                "{task.fields[reliability]}"
            ),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task(
            "run", total=total, completed=completed, rate=0.0, samples=0, red_flags=0, rounds=0, cost="", reliability=""
        )
        self._samples = self._red_flags = self._rounds = self._done = self._shown = 0
        self._started = self._shown_at = time.perf_counter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.update(self._task, advance=self._done - self._shown)  # the steps since the last redraw
        super().__exit__(exc_type, exc, tb)

    def advance(self, step: CommittedStep) -> None:
        """Counted at every step, drawn at most 20 times a second: a million steps must not pay for a million
        redraws."""
        self._done += 1
        self._samples += step.samples
        self._red_flags += step.red_flags
        self._rounds = max(self._rounds, step.rounds)
        now = time.perf_counter()
        if now - self._shown_at < 0.05:
            return
        self._shown_at, advance, self._shown = now, self._done - self._shown, self._done
        rate = self._done / max(now - self._started, 1e-9)
        self._progress.update(
            self._task,
            advance=advance,
            rate=rate,
            samples=self._samples,
            red_flags=self._red_flags,
            rounds=self._rounds,
            cost="cost unknown" if step.spent_usd is None else f"${step.spent_usd:.4f}",
            reliability=""
            if step.p_estimate is None or step.reliability is None
            else f"k={step.k} p≈{step.p_estimate:.4f} P(no error)≈{step.reliability:.4f}",
        )


class SampleProgress(_Bar):
    """The calibration's progress bar on stderr: samples heard of, votes, red flags, errors."""

    def __init__(self, console: Console, total: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]samples"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("votes {task.fields[votes]}  red flags {task.fields[red_flags]}  errors {task.fields[errors]}"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task("calibrate", total=total, votes=0, red_flags=0, errors=0)
        self._seen: Counter[Outcome] = Counter()

    def advance(self, notice: Notice) -> None:
        self._seen[notice.outcome] += 1
        self._progress.update(
            self._task,
            advance=1,
            votes=self._seen[Outcome.VOTE],
            red_flags=self._seen[Outcome.RED_FLAG],
            errors=self._seen[Outcome.ERROR],
        )
