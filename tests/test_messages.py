"""Messages a newcomer meets: one clear line each, with what to do, and never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.cluster.embedded import Embedded
from tests.conftest import ROOT, cli_process, run_cli, user_env


def test_a_trace_into_a_missing_folder_is_one_message(tmp_path: Path) -> None:
    done = run_cli("hanoi", "--disks", "2", "--trace", str(tmp_path / "missing" / "trace.jsonl"))
    assert done.returncode == 2 and "--trace" in done.stderr and "does its folder exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_redis_host_that_does_not_resolve_fails_at_once() -> None:
    started = time.monotonic()
    done = run_cli("hanoi", "--disks", "2", "--redis-url", "redis://no-such-host.invalid:6379/0")
    assert done.returncode != 0 and "does not resolve" in done.stderr, done.stderr
    assert time.monotonic() - started < 10  # not the 15 s a refused connection is waited for


def test_maker_flower_without_flower_installed_says_how_to_install_it(tmp_path: Path) -> None:
    (tmp_path / "flower.py").write_text("")  # a module, not the package: `flower.app` cannot be imported
    env = user_env(PYTHONPATH=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.interfaces.cli", "flower", "--broker-url", "memory://"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    said = " ".join(done.stderr.split())  # rich wraps long lines
    assert done.returncode == 2 and "pip install flower" in said and "Traceback" not in said


def test_a_vote_refused_by_the_provider_says_why_not_that_no_answer_led(cluster: Embedded) -> None:
    # The sim answers 400 to a prompt no oracle of it knows: a refusal, not a lack of agreement.
    done = run_cli("vote", "--prompt", "Tell me a joke.", "--redis-url", cluster.redis_url)
    assert done.returncode == 1
    assert "nothing decided:" in done.stdout and "400" in done.stdout and "no answer reached" not in done.stdout


def test_sigterm_to_a_run_on_a_cluster_names_the_run_to_resume(cluster: Embedded) -> None:
    with cli_process("hanoi", "--disks", "14", "--redis-url", cluster.redis_url) as proc:
        deadline = time.monotonic() + 60
        while True:  # until the run has started: it is in the Redis
            listed = json.loads(run_cli("status", "--redis-url", cluster.redis_url, "--json").stdout)
            going = [r for r in listed if r["state"] == "running" and r["total_steps"] == 2**14 - 1]
            if going and going[0]["steps_done"] > 0:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    run_id = going[0]["run_id"]
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"--resume {run_id}" in err and "embedded cluster" not in err, err
