"""How a worker process starts, says it is ready, and stops at once when told.

`python -m maker_workers.worker [flags]` takes the flags of `celery -A maker_workers.celery_app worker [flags]`
and runs the same command, Celery's own `worker`, on maker's app; it only skips the `celery` umbrella command,
which imports every other subcommand and each installed plugin (Flower, a REPL) before it starts a worker: about
half a second of a worker's start. The embedded cluster starts its workers this way.

Nothing here imports Celery until `main` runs: the orchestrator reads `READY_LINE` from this module.
"""

from __future__ import annotations

import os
import signal
from typing import Any

READY_LINE = "maker worker ready"  # said on stdout once the worker consumes; the embedded launcher waits for it


def wake_on_signals(hub: Any) -> None:
    """Let a signal wake the worker's event loop (kombu's `Hub`). Celery's SIGTERM and SIGINT handlers only set a
    flag that the loop reads after its poll returns, which an idle worker's does after up to a second; Python
    writes a byte to its wakeup fd on every signal, and that fd, watched by the poll, makes it return at once."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    hub.add_reader(read_fd, _drain, read_fd)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:  # emptied
        return


def main() -> None:
    """Celery's `worker` command on maker's app, with the command line's flags."""
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker

    from maker_workers.celery_app import app

    context = CLIContext(app=app, no_color=False, workdir=None)
    worker.main(obj=context, prog_name="python -m maker_workers.worker", auto_envvar_prefix="CELERY")


if __name__ == "__main__":
    main()
