"""Progress on stderr: in a terminal, bars, a run's (steps/s, samples, the samples speculation wasted, red flags,
rounds, cost, the reliability the votes imply) and a calibration's (samples heard of, votes, red flags, errors);
elsewhere (a log), whole lines."""

from __future__ import annotations

import json as jsonlib
import time
from collections import Counter
from types import TracebackType
from typing import Any, Self, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from maker_workers.votes import Notice, Outcome
from orchestrator.engine.runner import CommittedStep


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
                "{task.fields[rate]:.1f} steps/s  samples {task.fields[samples]}  {task.fields[wasted]}  "
                "red flags {task.fields[red_flags]}  max rounds {task.fields[rounds]}  {task.fields[cost]}  "
                "{task.fields[reliability]}"
            ),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task(
            "run",
            total=total,
            completed=completed,
            rate=0.0,
            samples=0,
            wasted="",
            red_flags=0,
            rounds=0,
            cost="",
            reliability="",
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
            wasted=f"wasted {step.wasted_samples} ({wasted_share(step):.1%})",
            red_flags=self._red_flags,
            rounds=self._rounds,
            cost="cost unknown" if step.spent_usd is None else f"${step.spent_usd:.4f}",
            reliability=""
            if step.p_estimate is None or step.reliability is None
            else f"k={step.k} p≈{step.p_estimate:.4f} P(no error)≈{step.reliability:.4f}",
        )


def wasted_share(step: CommittedStep) -> float:
    """The share of the samples sent so far that no committed step counted or can count."""
    return step.wasted_samples / step.sent_samples if step.sent_samples else 0.0


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


class ProgressLog:
    """A run's progress where stderr is no terminal (nohup, cron, systemd, a container's log): one whole line every
    `every_s` seconds, and one at the end with the final counts; `json=True` writes each as one JSON object (for log
    shippers; the fields are in docs/logs.md). Warnings go the same way."""

    def __init__(self, out: TextIO, total: int | None, completed: int = 0, every_s: float = 10.0, json: bool = False):
        self._out, self._total, self._every_s, self._json = out, total, every_s, json
        self._first = completed
        self._step = completed
        self._samples = self._red_flags = 0
        self._last: CommittedStep | None = None
        self._started = self._written_at = time.perf_counter()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.write("end")

    def advance(self, step: CommittedStep) -> None:
        self._step = step.step + 1
        self._samples += step.samples
        self._red_flags += step.red_flags
        self._last = step
        if time.perf_counter() - self._written_at >= self._every_s:
            self.write("progress")

    def warn(self, message: str) -> None:
        if self._json:
            self._line({"event": "warning", "message": message})
        else:
            self._line(f"warning: {message}")

    def figures(self) -> dict[str, Any]:
        """The line's fields (docs/logs.md)."""
        now = time.perf_counter()
        elapsed = now - self._started
        rate = (self._step - self._first) / elapsed if elapsed > 0 else 0.0
        total, last = self._total, self._last
        left = None if total is None or rate <= 0 else (total - self._step) / rate
        return {
            "step": self._step,
            "total": total,
            "percent": None if not total else round(100 * self._step / total, 2),
            "steps_per_s": round(rate, 2),
            "eta_s": None if left is None else round(left),
            "elapsed_s": round(elapsed, 1),
            "samples": self._samples,
            "wasted_samples": 0 if last is None else last.wasted_samples,
            "wasted_share": 0.0 if last is None else round(wasted_share(last), 4),
            "red_flags": self._red_flags,
            "cost_usd": None if last is None else last.spent_usd,
            "k": None if last is None else last.k,
            "p_estimate": None if last is None else last.p_estimate,
            "reliability": None if last is None else last.reliability,
        }

    def write(self, event: str) -> None:
        self._written_at = time.perf_counter()
        at = self.figures()
        if self._json:
            self._line({"event": event, **at})
            return
        of = f"/{at['total']:,} ({at['percent']:.1f}%)" if at["total"] else ""
        eta = "" if at["eta_s"] is None else f", ETA {at['eta_s']:,} s"
        cost = "" if at["cost_usd"] is None else f", ${at['cost_usd']:.4f}"
        reading = ""
        if at["reliability"] is not None:
            reading = f", k={at['k']} p≈{at['p_estimate']:.4f} P(no error)≈{at['reliability']:.4f}"
        self._line(
            f"{event}: step {at['step']:,}{of}, {at['steps_per_s']:.1f} steps/s{eta}, samples {at['samples']:,}, "
            f"wasted {at['wasted_samples']:,} ({at['wasted_share']:.1%}), red flags {at['red_flags']:,}{cost}{reading}"
        )

    def _line(self, line: str | dict[str, Any]) -> None:
        text = line if isinstance(line, str) else jsonlib.dumps(line)
        self._out.write(text + "\n")
        self._out.flush()
