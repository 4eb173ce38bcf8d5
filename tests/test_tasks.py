"""Any task through the cluster: spec examples, `maker run`, `maker vote` and the Python API, with real parts."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import yaml

from maker_workers.celery_app import make_app
from maker_workers.errors import StepFailed
from orchestrator import api
from orchestrator.cluster.connect import ClusterOptions
from orchestrator.cluster.embedded import Embedded
from orchestrator.engine.runner import Runner, VotingConfig
from orchestrator.planning.method import k_min
from orchestrator.reports.report import TaskReport
from tests.conftest import ROOT, OrchestratorDied, dies_after, run_cli

EXAMPLES = ROOT / "examples"


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def inversions(values: list[int]) -> int:
    return sum(a > b for i, a in enumerate(values) for b in values[i + 1 :])


def last_json(result_stdout: str) -> dict:
    return json.loads(result_stdout.strip().splitlines()[-1])


def test_each_example_runs_to_its_exact_result_from_one_command(tmp_path: Path) -> None:
    multiply, sort, ledger = example("multiply"), example("sort"), example("ledger")
    expected_balance = Decimal(ledger["initial_state"]["balance"]) + sum(
        Decimal(e) for e in ledger["initial_state"]["entries"]
    )
    checks = {
        "multiply": lambda final: (
            int(final["out"]) == int(multiply["initial_state"]["a"]) * multiply["initial_state"]["b"]
        ),
        "sort": lambda final: final == sorted(sort["initial_state"]),
        "ledger": lambda final: Decimal(final["balance"]) == expected_balance,
    }
    for name, exact in checks.items():
        trace = tmp_path / f"{name}.jsonl"
        result = run_cli("run", str(EXAMPLES / f"{name}.yaml"), "--json", "--trace", str(trace))
        assert result.returncode == 0, result.stderr
        report = last_json(result.stdout)
        assert report["task"] == name and report["done"] is True and report["failure"] is None
        assert exact(report["final_state"]), report["final_state"]
        lines = [json.loads(line) for line in trace.read_text().splitlines()]
        assert [line["step"] for line in lines] == list(range(report["steps"]))
        assert all(set(line) >= {"step", "state", "answer", "samples", "votes"} for line in lines)
        assert sum(report["votes_per_step"].values()) == report["steps"]
        assert all(int(votes) >= report["k"] for votes in report["votes_per_step"])
    assert len(sort["initial_state"]) > 2 and report  # the sort took exactly one step per inversion:
    sort_trace = [json.loads(line) for line in (tmp_path / "sort.jsonl").read_text().splitlines()]
    assert len(sort_trace) == inversions(sort["initial_state"])


def test_a_generic_task_at_25_percent_error_reaches_the_exact_result_at_the_formulas_k() -> None:
    spec = example("sort")
    steps = inversions(spec["initial_state"])
    k = k_min(0.75, steps, 0.99)  # p among valid answers is 1 - the sim's error rate
    result = run_cli(
        "run",
        str(EXAMPLES / "sort.yaml"),
        "--sim-error-rate",
        "0.25",
        "--k",
        str(k),
        "--max-samples",
        "400",
        "--speculate",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert report["k"] == k and report["final_state"] == sorted(spec["initial_state"])
    assert report["steps"] == steps
    assert report["votes"] > steps * k  # the wrong answers were there, and were outvoted


def test_vote_returns_the_majority_answer_of_a_biased_model() -> None:
    result = run_cli(
        "vote",
        "--prompt",
        "Compute: (17 * 23) - 4",
        "--format",
        "json",
        "--sim-error-rate",
        "0.2",
        "--k",
        "6",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    decision = last_json(result.stdout)
    assert decision["decided"] and decision["winner"] == {"answer": 387}
    assert decision["winner_votes"] >= 6 + decision["runner_up_votes"]
    assert decision["tally"]['{"answer":387}'] == decision["winner_votes"]
    assert decision["sample_count"] >= decision["votes"] >= 6 and decision["input_tokens"] > 0
    # What each sample said comes with the decision: its text, verdict and reason.
    assert len(decision["samples"]) == decision["sample_count"]
    votes = [s for s in decision["samples"] if s["verdict"] == "vote"]
    assert len(votes) == decision["votes"] and all(s["text"] and s["answer"] for s in votes)


def test_vote_refuses_to_guess_when_the_cap_is_reached() -> None:
    # a coin-flip model: 12 agreeing samples in a row are needed and 12 is the cap
    result = run_cli(
        "vote", "--prompt", "Compute: 2 + 2", "--sim-error-rate", "0.49", "--k", "12", "--max-samples", "12", "--json"
    )
    assert result.returncode == 1, result.stderr
    decision = last_json(result.stdout)
    assert decision["decided"] is False and decision["winner"] is None
    assert "12 samples without a 12-vote margin" in decision["failure"]
    assert sum(decision["tally"].values()) == decision["votes"] <= 12
    assert "no decision" in result.stderr


def test_vote_takes_a_prompt_literally_and_parses_with_a_regex(cluster: Embedded) -> None:
    decision = api.vote(
        "Compute: 6 * 7\nTemplates are not expanded here: {{ state }}",
        answer=api.answer_spec({"format": "regex", "pattern": r'\{"answer":\s*(?P<n>-?\d+)\}'}),
        voting=VotingConfig(k=2),
        cluster=ClusterOptions(redis_url=cluster.redis_url),
    )
    assert decision.decided and decision.winner == {"n": "42"}
    # A pattern that matches only inside a longer line is a red flag, never a repair.
    partial = api.vote(
        "Compute: 6 * 7",
        answer=api.answer_spec({"format": "regex", "pattern": r'"answer":\s*(?P<n>-?\d+)'}),
        voting=VotingConfig(k=2),
        cluster=ClusterOptions(redis_url=cluster.redis_url),
    )
    assert not partial.decided and set(partial.red_flags_by_reason) == {"parse"}
    assert "must match a line whole" in (partial.samples[0].detail or "")


def test_bad_vote_and_run_input_gets_one_clear_message(tmp_path: Path) -> None:
    bad_format = tmp_path / "bad.yaml"
    bad_format.write_text(yaml.safe_dump({**example("sort"), "answer": {"format": "xml"}}))
    escape = tmp_path / "escape.yaml"
    escape.write_text(yaml.safe_dump({**example("sort"), "prompt": "{{ state.__class__ }}"}))
    cases = [
        (["run", str(bad_format)], "answer.format"),
        (["run", str(escape)], "sandbox"),
        (["run", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["run", str(EXAMPLES / "sort.yaml"), "--k", "5", "--max-samples", "4"], "--max-samples"),
        (["vote"], "--prompt"),
        (["vote", "--prompt", "x", "--format", "regex"], "--pattern"),
        (["vote", "--prompt", "x", "--format", "json", "--schema", '{"type": 5}'], "--schema"),
    ]
    for args, mention in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert mention in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_spec_run_resumes_and_refuses_another_task_or_k(cluster: Embedded, tmp_path: Path) -> None:
    client = redis.Redis.from_url(cluster.redis_url)
    task = api.spec_task(EXAMPLES / "sort.yaml")
    first = Runner(client, make_app(cluster.redis_url), api.voting_for(task.spec), task, health_check=cluster.check)
    with pytest.raises(OrchestratorDied):
        first.run(dies_after(20))
    url = cluster.redis_url
    other_k = run_cli("run", str(EXAMPLES / "sort.yaml"), "--redis-url", url, "--resume", first.run_id, "--k", "4")
    assert other_k.returncode == 2 and "--k 3" in other_k.stderr
    other_task = run_cli("run", str(EXAMPLES / "ledger.yaml"), "--redis-url", url, "--resume", first.run_id)
    assert other_task.returncode == 2 and "different task" in other_task.stderr
    result = run_cli("run", str(EXAMPLES / "sort.yaml"), "--redis-url", url, "--resume", first.run_id, "--json")
    assert result.returncode == 0, result.stderr
    assert "resuming at step 21" in result.stderr
    report = last_json(result.stdout)
    sort = example("sort")["initial_state"]
    assert (report["steps"], report["final_state"]) == (inversions(sort), sorted(sort))


def test_a_when_task_that_never_ends_fails_at_max_steps(cluster: Embedded) -> None:
    spec = example("sort") | {"done": {"when": "false", "max_steps": 5}}
    with pytest.raises(StepFailed, match="not done after 5 steps"):
        Runner(
            redis.Redis.from_url(cluster.redis_url),
            make_app(cluster.redis_url),
            api.voting_for(api.spec_task(spec).spec),
            api.spec_task(spec),
        ).run()


def test_a_run_can_be_followed_from_another_connection(cluster: Embedded) -> None:
    reports: list[TaskReport] = []
    run_ids: list[str] = []
    started = threading.Event()

    def on_start(run_id: str, steps_done: int) -> None:
        run_ids.append(run_id)
        started.set()

    hooks = api.Hooks(on_start=on_start)
    worker = threading.Thread(
        target=lambda: reports.append(
            api.run_spec(EXAMPLES / "sort.yaml", cluster=ClusterOptions(redis_url=cluster.redis_url), hooks=hooks)
        )
    )
    worker.start()
    assert started.wait(60)
    seen = list(api.follow(run_ids[0], cluster.redis_url, wake_s=0.2))
    worker.join(120)
    assert seen[-1].finished and seen[-1].failure is None and seen[-1].task == "sort"
    assert seen[-1].steps_done == reports[0].steps == inversions(example("sort")["initial_state"])
    assert [s.steps_done for s in seen] == sorted(s.steps_done for s in seen)  # progress never goes back
