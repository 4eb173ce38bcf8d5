"""`maker calibrate`: measure a model's p, valid rate, answer lengths and cost on random steps of a task:
Hanoi's (scored against the optimal moves), or a spec task's, taken from a reference run's --trace file
(scored against the answers that run committed).

Each drawn step gets `per_step` samples at the temperatures a run uses (the first at the first temperature, the
rest at the later one), through the cluster as any run's samples go: a Celery task each, drawn and red-flagged by
the workers, recorded by the vote script in a run of its own whose k no contest can reach, so nothing is ever
decided. The answers are then scored against the right ones: ground truth is legitimate here, because calibration
measures and never votes.

Several samples a step show what one p hides (`Spread`): how p varies from step to step, the steps whose
commonest answer is wrong (no k fixes those), and how alike a step's samples are. MAKER's formulas assume
independent samples with one p for every step; a real model near T=0 gives neither.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel

from maker_workers import keys
from maker_workers.domains import hanoi
from maker_workers.domains.answers import key_of
from maker_workers.domains.base import JSON, RedFlag, Task
from maker_workers.domains.spec import SpecTask
from maker_workers.errors import ConfigError, MakerError, Rejected, store_errors
from maker_workers.sampling import SampleRequest
from maker_workers.votes import Notice, Outcome
from orchestrator.cluster.connect import Cluster, ClusterOptions, cluster_for_run
from orchestrator.engine.meanings import rule_to_measure
from orchestrator.engine.publisher import Publisher
from orchestrator.engine.runner import VotingConfig
from orchestrator.engine.store import RunStore
from orchestrator.planning.method import wilson
from orchestrator.reports.report import cost_usd

UNREACHABLE_K = 10**6  # the calibration run's margin: one sample per contest never decides it
OVERDISPERSED_Z = 2.326  # the one-sided 1% point of the normal
MAX_RHO = 0.999  # the correlation of steps all right or all wrong: their Beta is then near-two points (0 and 1)
LENGTH_EDGES = (200, 400, 700)  # output-token buckets: the paper saw errors rise past about 700
ANSWERED = ("vote", "red_flag", "error", "fatal")  # the event kinds that close a sample


class TokenStats(BaseModel):
    """Output tokens of the model's answers (votes and red flags)."""

    mean: float
    p50: int
    p90: int
    p99: int


class LengthBucket(BaseModel):
    """The error rate among valid answers of one length range."""

    tokens: str  # "<200", "200-400", "400-700", ">=700"
    votes: int
    wrong: int
    error_rate: float | None  # None without votes


class Spread(BaseModel):
    """How the model's p varies across the calibrated steps, and how alike a step's samples are."""

    steps: int  # steps with at least two valid answers: what the figures below are over
    p_p10: float  # the share right of a step, at the 10th, 50th and 90th percentile of steps
    p_p50: float
    p_p90: float
    hard_steps: int  # steps right on at most half their valid answers
    wrong_mode_steps: int  # steps whose commonest answer is not surely the right one (a wrong one leads or ties)
    wrong_mode_share: float
    correlation: float  # how alike a step's answers are in being right (intra-step correlation; 0: independent)
    beta_a: float | None  # p across steps as Beta(a, b) (fit by moments); None when the answers look independent
    beta_b: float | None
    copy_share: float | None  # valid answers after each step's first that repeat its reasoning byte for byte (copies)
    identical_share: float | None = None  # answers after each step's first whose whole text repeats an earlier one
    wrong_collisions: float | None  # wrong answers equal to another wrong answer of their step: voting's foe


class Calibration(BaseModel):
    """What `maker calibrate` measured; `--out` writes it, `maker plan --from-calibration` reads it."""

    run_id: str
    task: str  # "hanoi" or the spec's name
    disks: int | None  # Hanoi's; None for a spec task
    steps: int  # the task's (2^disks - 1, or the reference run's); the samples were drawn among them
    models: list[str]  # "provider:model" of the answers
    samples: int  # asked for
    answered: int  # heard of; the rest were lost (no worker recorded them in time)
    votes: int  # valid answers
    correct: int
    p: float | None  # correct / votes: the chance one valid sample is right
    p_low: float | None  # Wilson 95% interval of p
    p_high: float | None
    valid_rate: float | None  # votes / (votes + red flags): provider errors are not the model's answers
    red_flags: int
    red_flags_by_reason: dict[str, int]
    errors: int  # provider calls that failed after retries
    input_tokens_mean: float | None
    cached_share: float | None = None  # of the input tokens, those read from the provider's prompt cache
    output_tokens: TokenStats | None
    error_by_length: list[LengthBucket]
    cost_usd: float | None  # None when a model's price is unknown
    cost_per_sample_usd: float | None  # per answer (vote or red flag): what a plan's samples cost
    temperature_omitted: bool  # the model refused a temperature: it answered at its own default
    wall_s: float
    per_step: int = 1  # samples drawn on each drawn step
    temperatures: tuple[float, float] | None = None  # the first sample's and the later ones'
    spread: Spread | None = None  # with two or more samples a step


def _percentile(ordered: list[int], q: float) -> int:
    """Nearest rank: a value some answer really had."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _bucket_names() -> list[str]:
    inner = [f"{a}-{b}" for a, b in itertools.pairwise(LENGTH_EDGES)]
    return [f"<{LENGTH_EDGES[0]}", *inner, f">={LENGTH_EDGES[-1]}"]


@dataclass(frozen=True)
class DrawnStep:
    step: int
    state: JSON
    previous: JSON  # the winning answer of the step before, as a run would hand it on (None on step 0)
    right: str  # the vote key of the right answer (Hanoi: the optimal move and its state)


def _picks(total: int, samples: int, rng: random.Random) -> list[int]:
    """`samples` steps among `total` at random, each at most once while there are enough."""
    return rng.sample(range(total), samples) if samples <= total else rng.choices(range(total), k=samples)


def draw_steps(disks: int, samples: int, rng: random.Random) -> list[DrawnStep]:
    """`samples` steps at random, each at most once while the task has enough, in step order."""
    picks = _picks(hanoi.n_steps(disks), samples, rng)
    wanted = Counter(picks)
    last = max(picks)
    drawn: list[DrawnStep] = []
    state: hanoi.State = hanoi.initial_state(disks)
    previous: dict | None = None
    for step, move in enumerate(hanoi.optimal_moves(disks)):
        after = hanoi.apply_move(state, move)
        drawn += [DrawnStep(step, state, previous, hanoi.candidate(move, after))] * wanted[step]
        if step == last:
            break
        state, previous = after, hanoi.payload(move, after)
    return drawn


def read_trace(path: Path) -> list[dict[str, Any]]:
    """The lines of a run's --trace file; one that cannot be read is a ConfigError naming the file."""
    try:
        with path.open(encoding="utf-8") as lines:
            found = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"--trace {path}: cannot read it as a run's trace ({exc})") from exc
    if not found or not all(isinstance(line, dict) for line in found):
        raise ConfigError(f"--trace {path}: not a run's trace (one JSON object a step)")
    return found


def draw_trace_steps(task: SpecTask, lines: list[dict[str, Any]], samples: int, rng: random.Random) -> list[DrawnStep]:
    """`samples` steps at random among a reference run's committed ones (its trace lines), in step order, each
    right answer the vote key the task's parser gives the answer the reference run committed. A trace that is
    not of this task (or not a trace) raises ConfigError; a resumed run's repeated step counts once."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in lines:
        if not isinstance(line.get("step"), int) or "state" not in line or "answer" not in line:
            raise ConfigError("not a spec run's trace (each line needs step, state and answer)")
        by_step[line["step"]] = line
    if sorted(by_step) != list(range(len(by_step))):
        raise ConfigError("the trace's steps are not 0, 1, 2, ... without a gap")
    if by_step[0]["state"] != task.initial_state():
        raise ConfigError(f"a trace of another task: its first state is not the initial state of {task.name}")
    drawn: list[DrawnStep] = []
    for step in sorted(_picks(len(by_step), samples, rng)):
        line = by_step[step]
        try:
            right = key_of(task.spec.answer, line["answer"])
        except RedFlag as flag:
            raise ConfigError(f"step {step}'s answer is not one of {task.name}: {flag.detail}") from None
        previous = by_step[step - 1]["answer"] if step else None
        drawn.append(DrawnStep(step, line["state"], previous, right))
    return drawn


class _Events:
    """Reads the calibration run's events as they come: each sample's closing one, by sample id."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self._client = client
        self._stream = keys.events(run_id)
        self._after = "-"
        self.by_sample: dict[str, dict[str, str]] = {}

    def read(self) -> None:
        while True:
            with store_errors("reading the calibration's events"):
                page = self._client.xrange(self._stream, min=self._after, count=10_000)
            for entry_id, raw in page:
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                if fields.get("kind") in ANSWERED:
                    self.by_sample[fields["sample"]] = fields
                self._after = f"({entry_id.decode()}"
            if len(page) < 10_000:
                return


def calibrate(
    task: Task,
    drawn: list[DrawnStep],
    *,
    steps: int,
    cluster: ClusterOptions | None = None,
    silence_s: float = VotingConfig().sample_timeout_s,
    on_cluster: Callable[[Cluster], None] = lambda _: None,
    on_sample: Callable[[Notice], None] = lambda _: None,
    per_step: int = 1,
    voting: VotingConfig | None = None,
) -> Calibration:
    """Ask the cluster's model `per_step` times on each drawn step of `task` (of `steps` in all: draw_steps for
    Hanoi, draw_trace_steps for a spec task), at `voting`'s temperatures, and score the answers. Samples unheard of
    for `silence_s` are counted as lost; a provider refusal no retry fixes raises Rejected."""
    if per_step < 1:
        raise ConfigError(f"samples a step must be at least 1, got {per_step}")
    samples = len(drawn) * per_step
    voting = voting or VotingConfig()
    with cluster_for_run(cluster or ClusterOptions()) as running:
        on_cluster(running)
        run_id = f"calibrate-{uuid.uuid4().hex[:12]}"
        store = RunStore(running.client, run_id)
        rule = rule_to_measure(store, running.client, running.broker, task.semantic)  # votes as the run's will
        store.start(task.definition(), {"k": UNREACHABLE_K, "calibration_samples": samples})
        if rule is not None:
            store.set_semantic_rule(rule.model_dump_json())
        events = _Events(running.client, run_id)
        right: dict[str, str] = {}
        group: dict[str, int] = {}  # sample id -> the drawn step it answers
        publisher = Publisher(running.broker)
        started = time.perf_counter()
        try:
            for i, item in enumerate(drawn):
                for j in range(per_step):
                    first = j == 0 and per_step > 1  # one sample alone is drawn at the later temperature, as before
                    request = SampleRequest(
                        run_id=run_id,
                        step=item.step,
                        input_hash=task.input_hash(item.state, item.step, item.previous),
                        state=item.state,
                        previous=item.previous,
                        sample_id=uuid.uuid4().hex,
                        temperature=voting.first_temperature if first else voting.later_temperature,
                        first=first,
                        later_temperature=voting.later_temperature,
                        k=UNREACHABLE_K,
                        member=i * per_step + j,  # an ensemble's models take turns
                    )
                    publisher.send(request, argsrepr=f"calibration={run_id} step={item.step}")
                    right[request.sample_id] = item.right
                    group[request.sample_id] = i
            publisher.close()  # all sent: only outcomes are awaited from here
            _collect(running, run_id, set(right), events, voting.wait_s, silence_s, on_sample)
        except BaseException:
            publisher.close()
            with contextlib.suppress(MakerError):  # the workers skip what is still queued
                store.stop("ended")
            raise
        wall = time.perf_counter() - started
        store.stop("done")
        events.read()
        lost = samples - sum(1 for sample in right if sample in events.by_sample)
        store.finish(f"{lost} samples never heard of" if lost else None)
        stats = store.stats()
    disks = task.disks if isinstance(task, hanoi.HanoiTask) else None
    measured = _measure(run_id, task.name, disks, steps, samples, right, events.by_sample, stats, wall)
    temperatures = (voting.first_temperature, voting.later_temperature)
    return measured.model_copy(
        update={"per_step": per_step, "temperatures": temperatures, "spread": spread(right, group, events.by_sample)}
    )


def spread(right: dict[str, str], group: dict[str, int], answers: dict[str, dict[str, str]]) -> Spread | None:
    """How p varies across steps and how alike a step's answers are, from the valid answers grouped by step; None
    with fewer than two steps of two valid answers each."""
    by_step: dict[int, list[dict[str, str]]] = {}
    for sample, fields in answers.items():
        if sample in group and fields.get("kind") == "vote":
            by_step.setdefault(group[sample], []).append(fields | {"right": right[sample]})
    steps = [votes for votes in by_step.values() if len(votes) >= 2]
    if len(steps) < 2:
        return None
    shares = sorted(sum(v["candidate"] == v["right"] for v in votes) / len(votes) for votes in steps)
    wrong_mode = 0
    copies = later = wrong = collided = 0
    for votes in steps:
        tally = Counter(v["candidate"] for v in votes)
        ranked = tally.most_common()
        top, top_votes = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0
        wrong_mode += top != votes[0]["right"] or top_votes == runner_up
        copies += sum(v.get("copy") == "1" for v in votes)
        later += len(votes) - 1
        mistakes = Counter(v["candidate"] for v in votes if v["candidate"] != v["right"])
        wrong += mistakes.total()
        collided += sum(n for n in mistakes.values() if n > 1)
    rho, a, b = _beta_fit([(sum(v["candidate"] == v["right"] for v in votes), len(votes)) for votes in steps])
    texts: dict[int, list[str]] = {}
    for sample, fields in answers.items():
        if sample in group and "text" in fields:
            texts.setdefault(group[sample], []).append(fields["text"])
    later_texts = sum(len(said) - 1 for said in texts.values())
    repeated = sum(len(said) - len(set(said)) for said in texts.values())
    return Spread(
        steps=len(steps),
        p_p10=_quantile(shares, 0.1),
        p_p50=_quantile(shares, 0.5),
        p_p90=_quantile(shares, 0.9),
        hard_steps=sum(share <= 0.5 for share in shares),
        wrong_mode_steps=wrong_mode,
        wrong_mode_share=round(wrong_mode / len(steps), 6),
        correlation=round(rho, 6),
        beta_a=a,
        beta_b=b,
        copy_share=round(copies / later, 6) if later else None,
        identical_share=round(repeated / later_texts, 6) if later_texts else None,
        wrong_collisions=round(collided / wrong, 6) if wrong else None,
    )


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _overdispersed(counts: list[tuple[int, int]], p: float) -> bool:
    """Whether the steps' counts vary more than one p allows: the chi-square test of homogeneity at 1%
    (Wilson-Hilferty's normal approximation of its tail). With a few samples a step, rho's estimate is noisy; a
    spread is only planned on when the counts show one."""
    chi2 = sum((x - n * p) ** 2 / (n * p * (1 - p)) for x, n in counts)
    df = len(counts) - 1
    z = ((chi2 / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return z > OVERDISPERSED_Z


def _beta_fit(counts: list[tuple[int, int]]) -> tuple[float, float | None, float | None]:
    """The intra-step correlation of being right (the ANOVA estimator for clustered binary answers) and, when it is
    above 0, the Beta(a, b) of per-step p it implies: mean p, a + b = (1 - rho) / rho. rho is 0 for independent
    answers with one p, and 1 when every step's answers are all right or all wrong (copies)."""
    groups, total = len(counts), sum(n for _, n in counts)
    p = sum(x for x, _ in counts) / total
    between = sum(n * (x / n - p) ** 2 for x, n in counts) / (groups - 1)
    within = sum(x * (1 - x / n) for x, n in counts) / (total - groups) if total > groups else 0.0
    n0 = (total - sum(n * n for _, n in counts) / total) / (groups - 1)
    denominator = between + (n0 - 1) * within
    rho = 0.0 if denominator <= 0 else min(MAX_RHO, max(0.0, (between - within) / denominator))
    if rho <= 0.0 or p in (0.0, 1.0) or not _overdispersed(counts, p):
        return rho, None, None  # one p explains the counts: a Beta fit to noise would invent hard steps
    scale = (1 - rho) / rho
    return rho, p * scale, (1 - p) * scale  # unrounded: a tiny b (a strong model's one bad step) is still above 0


def _collect(
    running: Cluster,
    run_id: str,
    pending: set[str],
    events: _Events,
    wait_s: float,
    silence_s: float,
    on_sample: Callable[[Notice], None],
) -> None:
    """Wait for every sample's notice (or `silence_s` without one), reading the events as they come."""
    heard_at = checked_at = time.monotonic()
    while pending:
        with store_errors("waiting for outcomes"):
            popped = running.client.blpop([keys.notify(run_id)], timeout=wait_s)
        now = time.monotonic()
        if now - checked_at >= wait_s:
            running.health_check()
            events.read()
            checked_at = now
        if popped is None:
            if now - heard_at >= silence_s:
                return
            continue
        notice = Notice.model_validate_json(popped[1])
        if notice.sample_id not in pending:
            continue
        heard_at = now
        pending.discard(notice.sample_id)
        if notice.outcome is Outcome.FATAL:
            raise Rejected(notice.reason or "the provider refused the calibration")
        on_sample(notice)


def _measure(
    run_id: str,
    task: str,
    disks: int | None,
    steps: int,
    samples: int,
    right: dict[str, str],
    answers: dict[str, dict[str, str]],
    stats: dict[str, int],
    wall_s: float,
) -> Calibration:
    """Score each answer against its step's right vote key, and sum up."""
    ours = [(answers[sample], key) for sample, key in right.items() if sample in answers]
    votes = [(fields, fields["candidate"] == key) for fields, key in ours if fields["kind"] == "vote"]
    flags = Counter(fields["reason"] for fields, _ in ours if fields["kind"] == "red_flag")
    lengths = sorted(int(fields["output_tokens"]) for fields, _ in ours if "output_tokens" in fields)
    correct = sum(ok for _, ok in votes)
    given = len(votes) + flags.total()  # the model's answers: what a plan's samples are

    names = _bucket_names()
    per_bucket: list[list[bool]] = [[] for _ in names]
    for fields, ok in votes:
        if "output_tokens" in fields:
            per_bucket[bisect.bisect_right(LENGTH_EDGES, int(fields["output_tokens"]))].append(ok)
    buckets = [
        LengthBucket(
            tokens=name,
            votes=len(oks),
            wrong=oks.count(False),
            error_rate=oks.count(False) / len(oks) if oks else None,
        )
        for name, oks in zip(names, per_bucket, strict=True)
    ]
    low, high = wilson(correct, len(votes)) if votes else (None, None)
    cost = cost_usd(stats)
    return Calibration(
        run_id=run_id,
        task=task,
        disks=disks,
        steps=steps,
        models=sorted({fields["model"] for fields, _ in ours if fields.get("model")}),
        samples=samples,
        answered=len(ours),
        votes=len(votes),
        correct=correct,
        p=correct / len(votes) if votes else None,
        p_low=low,
        p_high=high,
        valid_rate=len(votes) / given if given else None,
        red_flags=flags.total(),
        red_flags_by_reason=dict(flags),
        errors=sum(1 for fields, _ in ours if fields["kind"] in ("error", "fatal")),
        input_tokens_mean=stats.get("input_tokens", 0) / given if given else None,
        cached_share=stats.get("cached_input_tokens", 0) / stats["input_tokens"] if stats.get("input_tokens") else None,
        output_tokens=TokenStats(
            mean=sum(lengths) / len(lengths),
            p50=_percentile(lengths, 0.5),
            p90=_percentile(lengths, 0.9),
            p99=_percentile(lengths, 0.99),
        )
        if lengths
        else None,
        error_by_length=buckets,
        cost_usd=cost,
        cost_per_sample_usd=cost / given if cost is not None and given else None,
        temperature_omitted=bool(stats.get("temperature_omitted")),
        wall_s=round(wall_s, 3),
    )
