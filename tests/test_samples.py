"""`maker samples`: what the model said, read back from a run's Redis by any machine that reaches it."""

from __future__ import annotations

import json

from orchestrator.cluster.embedded import Embedded
from tests.conftest import run_cli


def test_maker_samples_lists_each_samples_text_verdict_and_reason(cluster: Embedded) -> None:
    ran = run_cli(
        "vote", "--prompt", "Compute: 6 * 7", "--format", "json", "--k", "3", "--redis-url", cluster.redis_url, "--json"
    )
    decision = json.loads(ran.stdout.strip().splitlines()[-1])
    assert decision["decided"], ran.stderr
    listed = run_cli("samples", decision["run_id"], "--redis-url", cluster.redis_url, "--json")
    assert listed.returncode == 0, listed.stderr
    samples = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [s["sample"] for s in samples] == [s["sample"] for s in decision["samples"]]
    assert all(s["text"] and s["verdict"] in ("vote", "late", "red_flag") for s in samples)
    assert {s["answer"] for s in samples if s["verdict"] == "vote"} >= {'{"answer":42}'}
    shown = run_cli("samples", decision["run_id"], "--step", "0", "--redis-url", cluster.redis_url)
    assert "step 0" in shown.stdout and "42" in shown.stdout
    flags = run_cli("samples", decision["run_id"], "--red-flags", "--redis-url", cluster.redis_url, "--json")
    assert all(json.loads(line)["verdict"] == "red_flag" for line in flags.stdout.splitlines())


def test_maker_samples_of_an_unknown_run_or_without_a_redis_is_one_clear_message(cluster: Embedded) -> None:
    missing = run_cli("samples", "nosuchrun", "--redis-url", cluster.redis_url)
    assert missing.returncode == 2 and "no run nosuchrun" in missing.stderr
    nowhere = run_cli("samples", "nosuchrun")
    assert nowhere.returncode == 2 and "--redis-url" in nowhere.stderr
