"""Real models from one command: `--provider/--model/--base-url/--rpm/--tpm/--ensemble`, prices and budgets.

Runs go through the embedded cluster's real worker processes to the simulated LLM over HTTP, speaking
each provider's own API shape.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from maker_workers import keys
from maker_workers.celery_app import QUEUE, make_app
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.errors import Rejected
from maker_workers.sampling import SampleRequest, record_failure
from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SimServer
from maker_workers.votes import Notice, Outcome, Snapshot, VoteBook
from orchestrator import api
from orchestrator.cluster.connect import ClusterOptions
from orchestrator.cluster.embedded import Embedded
from orchestrator.cluster.model_options import ModelOptions
from orchestrator.engine.runner import Runner, VotingConfig
from tests.conftest import OrchestratorDied, dies_after, run_cli, running_sim
from tests.watching import until


@pytest.mark.parametrize(
    ("args", "env", "mention"),
    [
        (["--provider", "openai", "--model", "gpt-4.1-mini"], {}, "OPENAI_API_KEY"),
        (["--provider", "anthropic", "--model", "claude-haiku-4-5"], {}, "ANTHROPIC_API_KEY"),
        (["--ensemble", "sim:a,anthropic:claude-haiku-4-5"], {}, "ANTHROPIC_API_KEY"),
        (["--provider", "openai"], {"OPENAI_API_KEY": "sk-x"}, "--model"),
        (["--provider", "gemini", "--model", "m"], {}, "gemini"),
        (["--ensemble", "openai"], {}, "provider:model"),
        (["--rpm", "0"], {}, "--rpm"),
        (["--model", "gpt-4.1-mini"], {}, "--provider"),  # not a silent simulated run priced at $0
        (["--max-cost-usd", "0"], {}, "--max-cost-usd"),
        (["--price-in", "0.4"], {}, "--price-out"),
        (["--provider", "ollama", "--model", "llama3.2", "--sim-error-rate", "0.1"], {}, "--sim-"),
        (
            ["--provider", "openai", "--model", "gpt-9", "--max-cost-usd", "1"],
            {"OPENAI_API_KEY": "sk-x"},
            "price table",
        ),
        (["--redis-url", "redis://127.0.0.1:1/0", "--model", "m"], {}, "MAKER_MODEL"),
        (["--redis-url", "redis://127.0.0.1:1/0", "--no-prompt-cache"], {}, "MAKER_PROMPT_CACHE"),
    ],
)
def test_a_model_that_cannot_be_called_is_named_before_anything_starts(
    args: list[str], env: dict[str, str], mention: str
) -> None:
    result = run_cli("hanoi", "--disks", "2", *args, timeout=60, **env)
    assert result.returncode == 2, result.stderr
    assert mention in result.stderr and "Traceback" not in result.stderr
    assert "embedded cluster up" not in result.stderr  # nothing was started


def unreliable_sim(**faults: Any) -> contextlib.AbstractContextManager[SimServer]:
    """The simulated LLM, speaking every provider's API, with faults injected on demand."""
    return running_sim(SimConfig(seed=11, **faults))


def served(url: str) -> dict[str, Any]:
    """What the simulated LLM at `url` says it served."""
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


KEYS = {"OPENAI_API_KEY": "sk-test-openai-7c1f", "ANTHROPIC_API_KEY": "sk-ant-test-91d2"}


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_each_provider_solves_hanoi_through_429s_and_500s_with_the_servers_token_count(provider: str) -> None:
    # Beside the faults, the sim's usual unreliability: colliding wrong answers, malformed and over-long
    # text, and answers revised after a wrong draft (several `move =` lines; the last counts).
    with unreliable_sim(rate_429=0.08, rate_500=0.03, retry_after_s=0.2, revised_rate=0.05) as sim:
        result = run_cli(
            "hanoi",
            "--disks",
            "6",
            "--provider",
            provider,
            "--model",
            "sim-hanoi",
            "--base-url",
            sim.url,
            "--price-in",
            "1",
            "--price-out",
            "5",
            "--json",
            **KEYS,
        )
        stats = served(sim.url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert (report["solved"], report["errors"], report["steps"]) == (True, 0, 63)
    assert stats["by_status"].get("429", 0) > 0 and stats["by_status"].get("500", 0) > 0  # the faults happened
    assert (report["input_tokens"], report["output_tokens"]) == (
        stats["served"]["input_tokens"],
        stats["served"]["output_tokens"],
    )
    expected = (stats["served"]["input_tokens"] * 1 + stats["served"]["output_tokens"] * 5) / 1e6
    assert report["cost_usd"] == pytest.approx(expected, abs=1e-9)
    assert report["models"][f"{provider}:sim-hanoi"]["samples"] == report["samples"]
    for secret in KEYS.values():
        assert secret not in result.stdout + result.stderr


def test_a_wrong_key_ends_the_run_at_once_with_what_to_do() -> None:
    with unreliable_sim(api_key="sk-the-right-one") as sim:
        started = time.monotonic()
        result = run_cli(
            "hanoi",
            "--disks",
            "8",
            "--provider",
            "openai",
            "--model",
            "sim-hanoi",
            "--base-url",
            sim.url,
            "--json",
            OPENAI_API_KEY="sk-a-wrong-one-5e3a",
        )
        elapsed = time.monotonic() - started
        requests = served(sim.url)["requests"]
    assert result.returncode == 1
    report = json.loads(result.stdout.splitlines()[-1])
    assert "401" in report["failure"] and "openai" in report["failure"] and "OPENAI_API_KEY" in report["failure"]
    assert report["steps"] == 0 and report["provider_errors"] >= 1
    assert "sk-a-wrong-one-5e3a" not in result.stdout + result.stderr
    assert requests <= 2 * 3  # no retries: the first k samples' calls and nothing after
    assert elapsed < 30  # the embedded cluster's start-up included; the run itself ends on the first refusal


def test_an_ensemble_pools_votes_across_models_and_reports_each_ones_share() -> None:
    with unreliable_sim() as sim:
        result = run_cli(
            "hanoi",
            "--disks",
            "5",
            "--ensemble",
            "openai:sim-a,anthropic:sim-b,ollama:sim-c",
            "--base-url",
            sim.url,
            "--json",
            **KEYS,
        )
        by_model = served(sim.url)["by_model"]
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["solved"] and report["errors"] == 0
    models = report["models"]
    assert set(models) == {"openai:sim-a", "anthropic:sim-b", "ollama:sim-c"}
    assert sum(m["samples"] for m in models.values()) == report["samples"]
    for label, counts in models.items():
        assert counts["samples"] >= report["samples"] // 4  # they take turns
        assert counts["input_tokens"] == by_model[label.split(":")[1]]["input_tokens"]
    assert sum(m["winning_share"] for m in models.values()) == pytest.approx(1.0, abs=1e-3)
    assert all(m["winning_votes"] > 0 for m in models.values())


@pytest.fixture(scope="module")
def priced() -> Iterator[Embedded]:
    """A cluster whose workers price the sim like a small model ($1 in, $5 out per million tokens); the
    sim answers in 30 ms, so samples are still in flight when a budget is reached."""
    models = ModelOptions(price_in=1.0, price_out=5.0)
    with Embedded(workers=1, concurrency=4, sim=SimConfig(seed=5, latency_ms=30), models=models) as cluster:
        yield cluster


def test_a_budget_stops_the_run_cleanly_and_a_larger_one_finishes_it(priced: Embedded) -> None:
    cluster = priced
    before = served(cluster.sim_url)["served"]["output_tokens"]
    stopped = run_cli(
        "hanoi",
        "--disks",
        "6",
        "--redis-url",
        cluster.redis_url,
        "--max-cost-usd",
        "0.02",
        "--speculate",
        "2",
        "--json",
    )
    assert stopped.returncode == 1, stopped.stderr
    report = json.loads(stopped.stdout.splitlines()[-1])
    assert report["failure"] == "budget" and 0 < report["steps"] < 63
    # The samples in flight at the stop were waited for: the report counts all the model served.
    assert report["output_tokens"] == served(cluster.sim_url)["served"]["output_tokens"] - before
    per_sample = report["cost_usd"] / report["samples"]
    in_flight = 4  # at most the worker's threads were drawing when the budget was reached
    assert 0.02 <= report["cost_usd"] <= 0.02 + in_flight * 2 * per_sample
    assert "--max-cost-usd" in stopped.stderr and "resume" in stopped.stderr.lower()

    resumed = run_cli(
        "hanoi",
        "--disks",
        "6",
        "--redis-url",
        cluster.redis_url,
        "--resume",
        report["run_id"],
        "--max-cost-usd",
        "1",
        "--json",
    )
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout.splitlines()[-1])
    assert (final["solved"], final["errors"], final["steps"]) == (True, 0, 63)
    assert final["cost_usd"] > report["cost_usd"]  # the whole run's spend, both parts


def test_run_and_vote_take_the_same_provider_options() -> None:
    with unreliable_sim(rate_429=0.05) as sim:
        ran = run_cli(
            "run",
            "examples/multiply.yaml",
            "--provider",
            "ollama",
            "--model",
            "sim-any",
            "--base-url",
            sim.url,
            "--price-in",
            "0.5",
            "--price-out",
            "1.5",
            "--json",
        )
        voted = run_cli(
            "vote",
            "--prompt",
            "Compute: 6 * 7",
            "--format",
            "json",
            "--provider",
            "anthropic",
            "--model",
            "claude-haiku-4-5",
            "--base-url",
            sim.url,
            "--json",
            **KEYS,
        )
        by_model = served(sim.url)["by_model"]
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.splitlines()[-1])
    assert report["done"] and report["cost_usd"] > 0 and list(report["models"]) == ["ollama:sim-any"]
    assert report["input_tokens"] == by_model["sim-any"]["input_tokens"]
    assert voted.returncode == 0, voted.stderr
    decision = json.loads(voted.stdout.splitlines()[-1])
    assert decision["winner"] == {"answer": 42}
    tokens = by_model["claude-haiku-4-5"]  # priced from the table: $1 in, $5 out per million
    assert decision["cost_usd"] == pytest.approx((tokens["input_tokens"] + 5 * tokens["output_tokens"]) / 1e6)


def test_the_sample_that_crosses_the_budget_still_decides_its_step(priced: Embedded) -> None:
    voting = VotingConfig(k=1, max_cost_usd=1e-9)  # less than one sample: the first one crosses it
    report = api.run_hanoi(1, voting=voting, cluster=ClusterOptions(redis_url=priced.redis_url))
    assert (report.solved, report.failure, report.samples) == (True, None, 1)


def test_a_resumed_run_does_not_hear_the_refusals_of_its_earlier_attempt(priced: Embedded) -> None:
    """A 401 ended the first attempt; its other queued samples' refusals are still on the notify list."""
    client = redis.Redis.from_url(priced.redis_url)
    task = HanoiTask(3)
    first = Runner(client, make_app(priced.redis_url), VotingConfig(), task)
    with pytest.raises(OrchestratorDied):
        first.run(dies_after(0))
    stale = Notice(sample_id="old", step=0, input_hash="x", outcome=Outcome.FATAL, reason="401", snapshot=Snapshot())
    client.rpush(keys.notify(first.run_id), stale.model_dump_json())
    resumed = Runner(client, make_app(priced.redis_url), VotingConfig(), task, run_id=first.run_id)
    assert resumed.run() == [[], [], [3, 2, 1]]


def queued_sample(client: redis.Redis, run_id: str) -> dict[str, Any] | None:
    """A sample request of `run_id` waiting in the broker's queue (no worker takes it here)."""
    for raw in client.lrange(QUEUE, 0, -1):
        args, _, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
        if args[0]["run_id"] == run_id:
            return args[0]
    return None


def test_a_refusal_heard_after_its_sample_was_given_up_on_still_ends_the_run(redis_url: str) -> None:
    """A sample unheard of past the timeout's cap is forgotten (the orchestrator keeps nothing that grows with
    the run); should it land at last refused (a worker that sat in retries), the refusal is still this run's, and
    ends it as it would have on time, instead of being taken for an earlier attempt's and counted as an error."""
    client = redis.Redis.from_url(redis_url)
    voting = VotingConfig(sample_timeout_s=0.5, sample_timeout_floor_s=0.1, wait_s=0.2, speculate=0)
    runner = Runner(client, make_app(redis_url), voting, HanoiTask(2))
    ended: list[BaseException] = []

    def drive() -> None:
        try:
            runner.run()
        except BaseException as exc:  # handed to the test's thread
            ended.append(exc)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    request = until(lambda: queued_sample(client, runner.run_id), 10, "a sample of the run in the broker's queue")
    given_up = lambda: request["sample_id"] not in runner._outstanding  # noqa: E731 - what _forget_unheard drops
    until(given_up, 10, "the queued sample given up on")
    refused = Rejected("sim at URL answered 401 Unauthorized: check MAKER_API_KEY")
    record_failure(VoteBook(client), SampleRequest.model_validate(request), refused)
    driver.join(10)
    assert not driver.is_alive() and len(ended) == 1
    assert isinstance(ended[0], Rejected) and "401 Unauthorized" in str(ended[0])
