"""Four machines, for real: network namespaces on a private bridge, each process started as docs/cluster.md
says. Host `db` runs Redis, the simulated model and Flower; `w1` and `w2` one Celery worker each; `or`
the orchestrator. A run is solved with samples drawn on both worker hosts, and again when w1's cable is pulled
mid-run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from maker_workers import keys
from maker_workers.tasks import READY_LINE
from orchestrator.cluster.embedded import SIM_READY, redis_server_binary
from orchestrator.cluster.flower import READY
from tests.conftest import user_env
from tests.netlab import Host, Lab, unavailable
from tests.watching import Flower, until

PASSWORD = "multihost-redis-pw"
LOGIN = ("watcher", "multihost-flower-pw")
WORKER = ["celery", "-A", "maker_workers.celery_app", "worker", "--pool", "threads", "-c", "8", "-Q", "maker"]
WORKER += ["--without-gossip", "--without-mingle", "--loglevel", "WARNING"]  # the line in docs/cluster.md
REDIS_FLAGS = ["--port", "6379", "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"]
SIM_FLAGS = ["--sim-latency-ms", "20", "--seed", "11"]  # 20 ms a call: the second run lasts a few seconds

WHY_NOT = unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    made = Lab()
    try:
        yield made
    finally:
        made.close()


def python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def test_workers_on_two_hosts_share_a_run_and_one_host_may_drop_out(lab: Lab, tmp_path: Path) -> None:
    db, w1, w2, orch = (lab.host(role) for role in ("db", "w1", "w2", "or"))
    redis_url = f"redis://:{PASSWORD}@{db.address}:6379/0"
    db.start(
        "redis",
        [redis_server_binary(), "--bind", db.address, "--requirepass", PASSWORD, "--dir", str(tmp_path), *REDIS_FLAGS],
        "Ready to accept connections",
        {},
    )
    db.start(
        "sim",
        python("orchestrator.interfaces.cli", "sim-llm", "serve", "--host", db.address, "--port", "8765", *SIM_FLAGS),
        SIM_READY,
        {},
    )
    db.start(
        "flower",
        python("orchestrator.interfaces.cli", "flower", "--host", db.address, "--inspect-every", "1"),
        READY,
        {"MAKER_REDIS_URL": redis_url, "MAKER_FLOWER_BASIC_AUTH": ":".join(LOGIN)},
    )
    worker_env = {
        "MAKER_REDIS_URL": redis_url,
        "MAKER_PROVIDER": "sim",
        "MAKER_BASE_URL": f"http://{db.address}:8765/v1",
        "MAKER_TASK_EVENTS": "true",
    }
    for host in (w1, w2):
        host.start("worker", python(*WORKER), READY_LINE, worker_env)
    flower = Flower(f"http://{db.address}:5555", LOGIN)
    store = redis.Redis.from_url(redis_url)
    try:
        first = hanoi(orch, redis_url, disks=5)
        on = orch.call(lambda: {task["worker"] for task in flower.samples(first["run_id"])})
        assert on == {f"celery@{w1.name}", f"celery@{w2.name}"}

        second = subprocess.Popen(
            orch.command(python("orchestrator.interfaces.cli", "hanoi", "--disks", "6", "--json")),
            env=user_env(MAKER_REDIS_URL=redis_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            run_id = until(lambda: orch.call(lambda: other_run(store, first["run_id"])), 30, "the second run")
            until(lambda: orch.call(lambda: committed(store, run_id) >= 10), 30, "10 steps of the second run")
            w1.cut()
            cut = time.time()  # what Flower's task timestamps count in
            out, errors = second.communicate(timeout=120)
        finally:
            second.kill()
            second.communicate()
        report = json.loads(out.splitlines()[-1])
        assert (report["solved"], report["errors"]) == (True, 0), errors
        assert orch.call(lambda: committed(store, run_id)) == report["steps"] == 63
        after = [task for task in orch.call(lambda: flower.samples(run_id)) if task["received"] > cut]
        assert after and {task["worker"] for task in after} == {f"celery@{w2.name}"}
        w1_name = f"celery@{w1.name}"
        until(lambda: orch.call(lambda: not flower.online()[w1_name]["status"]), 30, "w1 offline in Flower")
    finally:
        flower.close()
        store.close()


def hanoi(host: Host, redis_url: str, disks: int) -> dict:
    done = subprocess.run(
        host.command(python("orchestrator.interfaces.cli", "hanoi", "--disks", str(disks), "--json")),
        env=user_env(MAKER_REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert (report["solved"], report["errors"]) == (True, 0)
    return report


def other_run(store: redis.Redis, known: str) -> str | None:
    runs = {keys.run_of_meta(key.decode()) for key in store.scan_iter(keys.meta_pattern())}
    return next(iter(runs - {known}), None)


def committed(store: redis.Redis, run_id: str) -> int:
    step = store.hget(keys.checkpoint(run_id), "step")
    return int(step) if step else 0
