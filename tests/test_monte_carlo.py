"""Statistical claims checked by Monte Carlo: the real Lua script's decisions vs p_sub and E[votes],
and the simulated LLM's error rate vs what it was told."""

from __future__ import annotations

import contextlib
import math
import random
import statistics
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from maker_workers import keys
from maker_workers.domains import hanoi
from maker_workers.domains.base import Task
from maker_workers.domains.spec import SpecTask, load_spec
from maker_workers.providers.openai_compat import OpenAICompatible
from maker_workers.sampling import SamplePolicy, SampleRequest, draw_sample
from maker_workers.simllm.model import SimConfig, SimModel
from maker_workers.votes import Contest, Outcome, Snapshot, VoteBook
from orchestrator.planning.method import expected_votes, p_full, p_sub
from orchestrator.planning.plan import plan
from tests.conftest import ROOT, member, running_sim

RIGHT, WRONG = "right", "wrong"


Z99 = 2.576  # two-sided 99%


@pytest.mark.parametrize(("error_rate", "k", "steps"), [(0.3, 2, 2500), (0.2, 3, 2000)])
def test_lua_voting_fails_a_step_at_rate_one_minus_p_sub(
    client: redis.Redis, error_rate: float, k: int, steps: int
) -> None:
    """Each sample is right with probability p, else the step's one plausible wrong answer (collision)."""
    rng, book, p = random.Random(error_rate), VoteBook(client), 1 - error_rate
    failures, votes = 0, []
    for step in range(steps):
        contest = Contest(run_id="mc", step=step, input_hash="s", k=k)
        n = 0
        while True:
            n += 1
            result = book.record(contest, str(n), "vote", RIGHT if rng.random() < p else WRONG)
            if result.outcome is Outcome.DECIDED:
                failures += client.hget(keys.step("mc", step, "s").status, "winner") == WRONG.encode()
                votes.append(n)
                break
    q = 1 - p_sub(p, k)
    # 4 standard errors: a false alarm about once in 16,000 runs
    assert abs(failures / steps - q) < 4 * math.sqrt(q * (1 - q) / steps)
    mean = sum(votes) / steps
    sd = math.sqrt(sum((v - mean) ** 2 for v in votes) / (steps - 1))
    assert abs(mean - expected_votes(p, k)) < 4 * sd / math.sqrt(steps)


@pytest.mark.parametrize("error_rate", [0.05, 0.3])
def test_sim_llm_is_wrong_at_the_rate_it_was_given(error_rate: float) -> None:
    model = SimModel(SimConfig(error_rate=error_rate, malformed_rate=0.05, too_long_rate=0.02, seed=3))
    state, previous = [[4, 3], [1], [2]], (2, 0, 2)
    prompt = hanoi.messages(state, previous)[1]["content"]
    right = (hanoi.strategy_move(state, previous), hanoi.apply_move(state, hanoi.strategy_move(state, previous)))
    trials, valid, wrong, flagged = 20_000, 0, 0, 0
    for _ in range(trials):
        answer = model.answer(prompt, 0.1, 751)
        try:
            parsed = hanoi.parse(answer.text, 4)
        except hanoi.RedFlag:
            flagged += 1
            continue
        if answer.truncated:
            flagged += 1
            continue
        valid += 1
        wrong += parsed != right
    assert abs(wrong / valid - error_rate) < 4 * math.sqrt(error_rate * (1 - error_rate) / valid)
    assert abs(flagged / trials - 0.07) < 4 * math.sqrt(0.07 * 0.93 / trials)


def test_sim_llm_wrong_answers_mostly_collide() -> None:
    model = SimModel(SimConfig(error_rate=0.4, malformed_rate=0, too_long_rate=0, seed=5))
    state, previous = [[5, 4, 3], [2], [1]], (2, 0, 1)  # three legal moves: room for other mistakes
    prompt = hanoi.messages(state, previous)[1]["content"]
    answers = [hanoi.parse(model.answer(prompt, 0.1, None).text, 5) for _ in range(5000)]
    right = hanoi.strategy_move(state, previous)
    wrong = [a for a in answers if a != (right, hanoi.apply_move(state, right))]
    top_share = max(wrong.count(a) for a in wrong) / len(wrong)
    assert top_share == pytest.approx(0.8, abs=0.05)  # the step's one plausible mistake
    corrupt = sum(1 for move, _ in wrong if move == right) / len(wrong)
    assert corrupt == pytest.approx(0.1, abs=0.03)  # right move, corrupted next_state


def test_the_sample_pipeline_fails_steps_at_rate_one_minus_p_sub(client: redis.Redis) -> None:
    """The whole worker path, not just the script: the simulated LLM over HTTP, red flags, the Lua vote.

    Every wrong answer is the step's one plausible mistake (the worst case the formula describes), and
    each contest has its own prompt, so the deterministic first sample (T = 0) is independent too.
    """
    error_rate, k = 0.3, 2
    config = SimConfig(
        error_rate=error_rate, collision_share=1.0, corrupt_share=0.0, malformed_rate=0.02, too_long_rate=0.01, seed=21
    )
    book, task = VoteBook(client), hanoi.HanoiTask(10)
    states = list(_states_of_a_run(10))
    failures = 0
    with _sim_provider(config) as provider:
        for step, (state, previous, right) in enumerate(states):
            failures += _decide("mc2", task, step, state, previous, k, provider, book).winner != right
    q = 1 - p_sub(1 - error_rate, k)
    steps = len(states)
    assert abs(failures / steps - q) < 4 * math.sqrt(q * (1 - q) / steps)


@contextlib.contextmanager
def _sim_provider(config: SimConfig) -> Iterator[OpenAICompatible]:
    """The simulated LLM over HTTP on loopback, and a provider speaking to it."""
    with running_sim(config) as server, httpx.Client() as http:
        yield OpenAICompatible(http, base_url=server.url, model="sim", api_key=None)


def _decide(
    run_id: str, task: Task, step: int, state: Any, previous: Any, k: int, provider: OpenAICompatible, book: VoteBook
) -> Snapshot:
    """Draw samples for one step through the worker pipeline, as a run would, until the script decides it."""
    contest_hash, n = task.input_hash(state, step, previous), 0
    while True:
        request = SampleRequest(
            run_id=run_id,
            step=step,
            input_hash=contest_hash,
            state=state,
            previous=previous,
            sample_id=str(n),
            temperature=0.0 if n == 0 else 0.1,
            k=k,
        )
        n += 1
        recorded = draw_sample(request, task, member(provider), book, SamplePolicy())
        if recorded is not None and recorded.outcome is Outcome.DECIDED:
            return book.snapshot(request.contest)


def _states_of_a_run(disks: int) -> Iterator[tuple[hanoi.State, dict | None, str]]:
    state, previous = hanoi.initial_state(disks), None
    for move in hanoi.optimal_moves(disks):
        after = hanoi.apply_move(state, move)
        yield state, previous, hanoi.candidate(move, after)
        state, previous = after, hanoi.payload(move, after)


def test_a_spec_task_fails_steps_at_rate_one_minus_p_sub_through_the_pipeline(client: redis.Redis) -> None:
    """The same check on a task written as a spec (the sort example): the seam changes nothing statistically."""
    task = SpecTask(load_spec(ROOT / "examples" / "sort.yaml"))
    error_rate, k = 0.3, 2
    config = SimConfig(error_rate=error_rate, collision_share=1.0, corrupt_share=0.0, malformed_rate=0.02, seed=5)
    book = VoteBook(client)
    failures = steps = 0
    with _sim_provider(config) as provider:
        for trial in range(12):  # the right path through the sort, again and again, as separate runs
            state, previous, step = task.initial_state(), None, 0
            while not task.done(state, step):
                i = next(j for j in range(len(state) - 1) if state[j] > state[j + 1])
                right = [*state[:i], state[i + 1], state[i], *state[i + 2 :]]
                winner = _decide(f"mc3-{trial}", task, step, state, previous, k, provider, book).leading_answer
                failures += winner["list"] != right
                steps += 1
                previous, state, step = winner, right, step + 1
    q = 1 - p_sub(1 - error_rate, k)
    assert abs(failures / steps - q) < 4 * math.sqrt(q * (1 - q) / steps), (failures, steps, q)


@pytest.mark.parametrize(("p", "k"), [(0.65, 2), (0.7, 2), (0.7, 3), (0.75, 3)])
def test_failures_and_votes_per_step_match_what_maker_plan_predicts(client: redis.Redis, p: float, k: int) -> None:
    """A (p, k) grid through the worker pipeline (sim over HTTP, red flags, the Lua vote) against `plan`.

    The sim's wrong answers all collide on the step's one plausible mistake (collision_share 1): the single
    rival of the formulas' gambler's-ruin walk, their worst case. Anything less colliding decides faster.
    """
    steps = 511
    predicted = plan(p, steps, p_full(p, k, steps) * (1 - 1e-9))  # the target whose k_min is this k
    assert predicted.k_min == k
    config = SimConfig(
        error_rate=1 - p, collision_share=1.0, corrupt_share=0.0, malformed_rate=0.0, too_long_rate=0.0, seed=k
    )
    book, task = VoteBook(client), hanoi.HanoiTask(9)
    failures, votes = 0, []
    with _sim_provider(config) as provider:
        for step, (state, previous, right) in enumerate(_states_of_a_run(9)):
            decided = _decide(f"grid-{p}-{k}", task, step, state, previous, k, provider, book)
            failures += decided.winner != right
            votes.append(decided.votes)
    q = 1 - predicted.p_step
    assert abs(failures / steps - q) <= Z99 * math.sqrt(q * (1 - q) / steps) + 1 / steps
    mean = statistics.fmean(votes)
    assert abs(mean - predicted.expected_votes_per_step) <= Z99 * statistics.stdev(votes) / math.sqrt(steps)
