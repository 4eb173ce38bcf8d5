"""The scale-out benchmark's parts: the vote script queued on a pipeline, and the script itself at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Literal

import pytest
import redis

from maker_workers.votes import Contest, Outcome, VoteBook
from tests.conftest import ROOT


def test_queued_calls_record_as_record_does(book: VoteBook, client: redis.Redis) -> None:
    recorded, queued = (Contest(run_id=run, step=0, input_hash="abc", k=2) for run in ("r1", "r2"))
    votes: list[tuple[Literal["vote", "red_flag"], str]] = [("vote", "A"), ("red_flag", "malformed"), ("vote", "B")]
    votes += [("vote", "A"), ("vote", "A")]
    outcomes = [book.record(recorded, f"s{i}", kind, value).outcome for i, (kind, value) in enumerate(votes)]
    with client.pipeline(transaction=False) as pipe:
        for i, (kind, value) in enumerate(votes):
            book.queue(pipe, queued, f"s{i}", kind, value)
        replies = pipe.execute()
    assert [Outcome(reply[0].decode()) for reply in replies] == outcomes
    assert outcomes[-1] is Outcome.DECIDED
    assert book.snapshot(queued) == book.snapshot(recorded)


@pytest.mark.slow
def test_the_benchmark_runs_and_checks_itself() -> None:
    argv = [sys.executable, "benchmarks/scale_out.py", "--workers-list", "1,2", "--runs", "4", "--disks", "2"]
    argv += ["--warmup-s", "1", "--measure-s", "2", "--bound-s", "1", "--bound-clients", "1"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for point in result["points"]:
        assert point["runs"] >= 4 and point["solved"] == point["runs"] and point["errors"] == 0
        assert point["samples_per_s"] > 0
    counted, sent = result["vote_script"]["checked"].split(" calls")[0].split("/")
    assert sent == counted and result["vote_script"]["per_s"] > 0 and result["broker"]["per_s"] > 0
