"""Secrets stay secret: an API key and a Redis password reach the parts that need them and no artifact a
user, a log or Flower sees: stdout, stderr, the trace, the run's Redis, the Celery messages, the workers' logs.

The model is the simulated one behind a small gate that checks the key as a provider would, and can refuse
it with a 401 that echoes the key back, as OpenAI's does.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery.signals import before_task_publish

from maker_workers import keys
from maker_workers.celery_app import make_app
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SimServer
from maker_workers.tasks import READY_LINE
from orchestrator.cluster.embedded import Embedded, Process, free_port, redis_server_binary, worker_argv
from orchestrator.cluster.model_options import ModelOptions
from orchestrator.engine.runner import Runner, VotingConfig
from tests.conftest import run_cli

CANARY = "sk-test-SECRET-canary-123"
PASSWORD = "pw-SECRET-canary-456"


class Gate(ThreadingHTTPServer):
    """An OpenAI-style front for the simulated LLM: forwards requests that carry `CANARY`; answers any
    other key, or every request once `refuse` is set, with a 401 that names the key it was sent."""

    daemon_threads = True

    def __init__(self, sim_url: str) -> None:
        super().__init__(("127.0.0.1", 0), _GateHandler)
        self.sim_url = sim_url
        self.refuse = False
        self.forwarded = 0
        self.http = httpx.Client(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _GateHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the workers' clients expect
    server: Gate

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if self.server.refuse or key != CANARY:
            error = {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error"}
            self._answer(401, json.dumps({"error": error | {"code": "invalid_api_key"}}).encode())
            return
        self.server.forwarded += 1
        url = self.server.sim_url + self.path.removeprefix("/v1")
        sent = self.server.http.post(url, content=body, headers={"Content-Type": "application/json"})
        self._answer(sent.status_code, sent.content)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def gate() -> Iterator[Gate]:
    sim = SimServer("127.0.0.1", 0, SimConfig(seed=3, error_rate=0.0))
    sim.start_in_thread()
    server = Gate(sim.url)
    threading.Thread(target=server.serve_forever, name="gate", daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()
    server.http.close()
    sim.shutdown()
    sim.server_close()


@pytest.fixture(scope="module")
def keyed(gate: Gate) -> Iterator[Embedded]:
    """A cluster whose workers call the gate as `openai`, with the key in their environment."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", CANARY)
        models = ModelOptions(provider="openai", model="sim-hanoi", base_url=gate.url)
        with Embedded(workers=1, concurrency=4, models=models) as cluster:
            yield cluster


@pytest.fixture
def refusing(gate: Gate) -> Iterator[Gate]:
    gate.refuse = True
    yield gate
    gate.refuse = False


def everything_in(client: redis.Redis) -> str:
    """Every key of a Redis and every value it holds, whatever its type, as one text."""
    parts: list[Any] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values: Any = client.get(key)
        elif kind == "hash":
            values = client.hgetall(key)
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = client.smembers(key)
        elif kind == "zset":
            values = client.zrange(key, 0, -1, withscores=True)
        else:
            assert kind == "stream", kind
            values = client.xrange(key)
        parts.append((key, values))
    text = repr(parts)
    assert len(parts) > 3 and "events" in text  # a run was there to read
    return text


def hanoi_cli(*args: str, trace: Path, **env: str) -> tuple[Any, str]:
    """`maker hanoi --disks 3 ... --trace T --json` with the key in its environment; (result, all it wrote)."""
    result = run_cli("hanoi", "--disks", "3", "--trace", str(trace), "--json", *args, OPENAI_API_KEY=CANARY, **env)
    return result, result.stdout + result.stderr + (trace.read_text() if trace.exists() else "")


def test_the_key_reaches_the_model_and_no_output_of_an_embedded_run(gate: Gate, tmp_path: Path) -> None:
    before = gate.forwarded
    result, written = hanoi_cli(
        "--provider", "openai", "--model", "sim-hanoi", "--base-url", gate.url, trace=tmp_path / "t.jsonl"
    )
    assert result.returncode == 0, result.stderr
    assert gate.forwarded > before  # the model was called with the key
    assert json.loads(result.stdout.splitlines()[-1])["solved"]
    assert CANARY not in written


def test_a_401_that_echoes_the_key_leaves_it_in_no_output(refusing: Gate, tmp_path: Path) -> None:
    result, written = hanoi_cli(
        "--provider", "openai", "--model", "sim-hanoi", "--base-url", refusing.url, trace=tmp_path / "t.jsonl"
    )
    assert result.returncode == 1
    assert "401" in json.loads(result.stdout.splitlines()[-1])["failure"]
    assert CANARY not in written


def test_no_artifact_of_a_run_on_a_cluster_holds_the_key(keyed: Embedded, gate: Gate, tmp_path: Path) -> None:
    result, written = hanoi_cli("--redis-url", keyed.redis_url, trace=tmp_path / "t.jsonl")
    assert result.returncode == 0, result.stderr
    with redis.Redis.from_url(keyed.redis_url) as client:
        stored = everything_in(client)
    assert CANARY not in written + stored
    for process in keyed.processes:
        assert CANARY not in process.tail()


def test_a_401_on_a_cluster_records_why_without_the_key(keyed: Embedded, refusing: Gate, tmp_path: Path) -> None:
    result, written = hanoi_cli("--redis-url", keyed.redis_url, trace=tmp_path / "t.jsonl")
    assert result.returncode == 1
    run_id = json.loads(result.stdout.splitlines()[-1])["run_id"]
    with redis.Redis.from_url(keyed.redis_url) as client:
        stored = everything_in(client)
        assert b"401" in client.hget(keys.stats(run_id), "fatal")  # why it ended is kept...
    assert CANARY not in written + stored  # ...without the key the provider echoed


def test_the_celery_messages_flower_shows_hold_no_key(keyed: Embedded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)  # the orchestrator's environment has it too
    published: list[str] = []

    def capture(body: Any = None, headers: Any = None, **_: Any) -> None:
        published.append(repr((body, headers)))

    before_task_publish.connect(capture, weak=False)
    try:
        client = redis.Redis.from_url(keyed.redis_url)
        runner = Runner(client, make_app(keyed.redis_url), VotingConfig(), HanoiTask(2))
        assert runner.run() == [[], [], [2, 1]]
    finally:
        before_task_publish.disconnect(capture)
    assert len(published) >= 3 * 3
    assert all(f"'argsrepr': 'run={runner.run_id} step=" in message for message in published)
    assert not any(CANARY in message for message in published)


# --- a Redis with a password --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that wants PASSWORD, a worker that knows it, the simulated LLM; yields the URL."""
    port = free_port()
    argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--requirepass", PASSWORD, "--dir", str(tmp_path_factory.mktemp("locked"))]
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    sim = SimServer("127.0.0.1", 0, SimConfig(seed=3, error_rate=0.0))
    sim.start_in_thread()
    with contextlib.ExitStack() as stack:
        stack.callback(sim.server_close)
        stack.callback(sim.shutdown)
        server = Process("redis-server", argv, "Ready to accept connections")
        stack.callback(server.stop)
        server.wait_ready(30)
        env = {"MAKER_REDIS_URL": url, "MAKER_BROKER_URL": url, **ModelOptions().worker_env(sim.url)}
        worker = Process("worker", worker_argv(4, "locked"), READY_LINE, env)
        stack.callback(worker.stop)
        worker.wait_ready(60)
        yield url
        assert PASSWORD not in worker.tail()


def test_a_password_in_the_redis_url_works_and_is_never_shown(locked: str) -> None:
    ran = run_cli("hanoi", "--disks", "3", "--redis-url", locked, "--json")
    assert ran.returncode == 0, ran.stderr.replace(PASSWORD, "***")
    run_id = json.loads(ran.stdout.splitlines()[-1])["run_id"]
    audited = run_cli("audit", run_id, "--redis-url", locked, timeout=60)
    assert audited.returncode == 0 and "audit: clean" in audited.stdout
    for result in (ran, audited):
        assert PASSWORD not in result.stdout + result.stderr


def test_a_redis_that_cannot_be_reached_is_named_without_its_password(locked: str) -> None:
    """Said at once, not after the minute of retries that rides out a Redis restart mid-run."""
    port = locked.rsplit(":", 1)[1].split("/")[0]
    wrong = f"redis://:wrong-SECRET-pw@127.0.0.1:{port}/0"
    nobody = f"rediss://:wrong-SECRET-pw@127.0.0.1:{free_port()}/0"  # TLS, to a port where nothing listens
    plain = f"rediss://:wrong-SECRET-pw@127.0.0.1:{port}/0"  # TLS, to a plain port
    for url, command, code, said_what in (
        (wrong, ["hanoi", "--disks", "2", "--json"], 2, "refused the password"),
        (wrong, ["audit", "some-run"], 2, "refused the password"),
        (nobody, ["audit", "some-run"], 1, "cannot reach Redis"),
        (plain, ["hanoi", "--disks", "2"], 1, "is that port a TLS port?"),
    ):
        started = time.monotonic()
        result = run_cli(*command, "--redis-url", url, timeout=120, MAKER_REDIS_WAIT_S="1")
        assert time.monotonic() - started < 10  # a refused port is waited for MAKER_REDIS_WAIT_S, the rest not
        assert result.returncode == code, result.stderr
        said = " ".join(result.stderr.split())  # the console wraps long lines
        assert said_what in said and url.replace("wrong-SECRET-pw", "***") in said
        assert "SECRET" not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_a_worker_given_a_wrong_password_stops_at_once_and_says_so(locked: str) -> None:
    wrong = locked.replace(PASSWORD, "wrong-SECRET-pw")
    started = time.monotonic()
    worker = Process("worker", worker_argv(2, "wrong"), READY_LINE, {"MAKER_REDIS_URL": wrong})
    try:
        assert worker.popen.wait(30) == 2
    finally:
        worker.stop()
    assert time.monotonic() - started < 20  # not after a minute of retries
    assert "maker worker cannot start: Redis at redis://:***@" in worker.tail()
    assert "refused the password" in worker.tail() and "SECRET" not in worker.tail()


def test_a_spec_naming_its_own_embedding_server_never_gets_the_workers_key(client: redis.Redis) -> None:
    # answer.embeddings_base_url comes with the task (from anyone, through MCP): the worker's key stays home.
    from maker_workers.semantic import embedder_for
    from maker_workers.settings import WorkerSettings

    seen: list[httpx.Headers] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json={"data": [{"embedding": [1.0, 0.0]}], "usage": {"prompt_tokens": 2}})

    settings = WorkerSettings(provider="openai", model="m", api_key="sk-WORKER-SECRET-0123")
    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        embedder_for("openai:e5", settings, client, http, "http://elsewhere.example/v1").model.embed("hello")
        embedder_for("openai:e5", settings, client, http).model.embed("hello")  # the provider's own API: keyed
    assert "authorization" not in seen[0] and seen[1]["authorization"].startswith("Bearer sk-")
