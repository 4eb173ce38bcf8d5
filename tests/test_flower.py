"""`maker flower` on a real cluster: a password-protected redis-server, the sim over HTTP, Celery worker processes
started after Flower, and a `maker hanoi` run on them."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator

import pytest
import redis

from maker_workers.simllm.model import SimConfig
from maker_workers.tasks import READY_LINE
from orchestrator.cluster.embedded import Process, free_port, start_redis, worker_argv
from orchestrator.cluster.flower import READY
from tests.conftest import run_cli, running_sim
from tests.watching import Flower, until

PASSWORD = "redis-SECRET-pw-314"
API_KEY = "sk-SECRET-canary-271"
LOGIN = ("watcher", "flower-SECRET-828")


@pytest.fixture(scope="module")
def guarded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that needs a password, as a shared one should."""
    port = free_port()
    server = start_redis(port, str(tmp_path_factory.mktemp("redis")))
    redis.Redis(port=port).config_set("requirepass", PASSWORD)
    yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    server.stop()


def maker(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.interfaces.cli", *args]


def test_flower_lists_every_worker_and_each_sample_of_a_run(guarded_redis: str) -> None:
    processes: list[Process] = []
    port = free_port()
    flower = Flower(f"http://127.0.0.1:{port}", LOGIN)
    try:
        watcher = Process(
            "flower",
            maker("flower", "--port", str(port), "--inspect-every", "1"),
            READY,
            {"MAKER_REDIS_URL": guarded_redis, "MAKER_FLOWER_BASIC_AUTH": ":".join(LOGIN)},
        )
        processes.append(watcher)
        watcher.wait_ready(60)
        assert flower.http.get("/api/workers", auth=None).status_code == 401  # nothing without the login

        with running_sim(SimConfig(seed=5)) as sim:
            env = {
                "MAKER_REDIS_URL": guarded_redis,
                "MAKER_PROVIDER": "sim",
                "MAKER_BASE_URL": sim.url,
                "MAKER_API_KEY": API_KEY,
                "MAKER_TASK_EVENTS": "true",
            }
            names = ["alpha", "beta"]
            workers = [Process(name, worker_argv(4, name), READY_LINE, env) for name in names]  # after Flower
            processes.extend(workers)
            for worker in workers:
                worker.wait_ready(60)
            done = run_cli("hanoi", "--disks", "4", "--json", MAKER_REDIS_URL=guarded_redis)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.splitlines()[-1])
        assert report["solved"]

        def all_listed() -> dict | None:
            # Flower polls the workers' stats (every second here): a poll may predate the run's last tasks.
            listed = flower.workers()
            found = {name.partition("@")[0]: info for name, info in listed.items()}
            counts = [found.get(n, {}).get("stats", {}).get("total", {}).get("maker.sample", 0) for n in names]
            # Every counted sample was a task one of them ran (a sample run twice is counted once).
            return found if all(counts) and sum(counts) >= report["samples"] else None

        listed = until(all_listed, 30, "both workers in /api/workers, with every counted sample among their tasks")
        for info in listed.values():
            assert info["stats"]["pool"]["max-concurrency"] == 4
            assert "thread" in info["stats"]["pool"]["implementation"]

        def all_online() -> dict | None:
            page = {name.partition("@")[0]: w for name, w in flower.online().items()}
            return page if all(page.get(n, {}).get("status") and page[n]["processed"] for n in names) else None

        until(all_online, 30, "both workers online on the workers page, each with samples processed")

        samples = until(lambda: flower.samples(report["run_id"]), 10, "the run's sample tasks in /api/tasks")
        assert all(re.fullmatch(rf"run={report['run_id']} step=\d+", task["args"]) for task in samples)
        assert {task["worker"].partition("@")[0] for task in samples} <= set(names)
        assert {int(task["args"].rpartition("=")[2]) for task in samples} == set(range(report["steps"]))
        logs = "".join(process.tail() for process in processes)
        for secret in (PASSWORD, API_KEY, LOGIN[1]):
            assert secret not in flower.seen + logs
    finally:
        flower.close()
        for process in reversed(processes):
            process.stop()


def test_flower_says_what_is_wrong_before_it_starts() -> None:
    refused = run_cli("flower", "--host", "0.0.0.0", MAKER_REDIS_URL="redis://127.0.0.1:1/0")
    assert refused.returncode == 2
    assert "give --basic-auth USER:PASSWORD" in " ".join(refused.stderr.split())  # the message, unwrapped
    half = run_cli("flower", "--basic-auth", "nopassword", MAKER_REDIS_URL="redis://127.0.0.1:1/0")
    assert half.returncode == 2 and "USER:PASSWORD" in half.stderr
    nowhere = run_cli("flower")
    assert nowhere.returncode == 2 and "--redis-url" in nowhere.stderr
    unreachable = run_cli("flower", MAKER_REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:1/0", MAKER_REDIS_WAIT_S="1")
    assert unreachable.returncode == 1 and "cannot reach Redis" in unreachable.stderr
    assert PASSWORD not in unreachable.stderr
