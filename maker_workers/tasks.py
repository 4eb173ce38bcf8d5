"""Celery tasks: one per LLM sample; the embedding of a semantic run's example answers, before it starts; and the
no-op the benchmark compares against."""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import httpx
import redis
from celery.signals import worker_init, worker_ready

from maker_workers import keys, metrics
from maker_workers.celery_app import EMBED_EXAMPLES_TASK, NOOP_TASK, SAMPLE_TASK, app
from maker_workers.connections import connect, reach
from maker_workers.domains import Task, load_task
from maker_workers.errors import ConfigError, MakerError, store_errors
from maker_workers.members import Member, members_from
from maker_workers.sampling import SamplePolicy, SampleRequest, draw_sample, embedded, record_failure
from maker_workers.semantic import Embedder, embedder_for
from maker_workers.settings import settings
from maker_workers.simllm import inprocess
from maker_workers.votes import VoteBook
from maker_workers.worker import READY_LINE, wake_on_signals


@dataclass(frozen=True)
class WorkerResources:
    """One keep-alive Redis and httpx client per worker process, shared by its threads."""

    redis: redis.Redis
    http: httpx.Client
    book: VoteBook
    members: list[Member]  # the model, or an ensemble's models taking turns
    policy: SamplePolicy


@lru_cache(maxsize=1)
def resources() -> WorkerResources:
    cfg = settings()
    client = connect(cfg.redis_url, max_connections=cfg.http_connections)
    http = inprocess.client(
        cfg.sim_inprocess,
        timeout=cfg.request_timeout_s,
        limits=httpx.Limits(max_connections=cfg.http_connections, max_keepalive_connections=cfg.http_connections),
    )
    return WorkerResources(
        redis=client,
        http=http,
        book=VoteBook(
            client,
            events_maxlen=cfg.events_maxlen,
            contest_ttl_s=cfg.contest_ttl_s,
            worker=f"{socket.gethostname()}/{os.getpid()}",
        ),
        members=members_from(cfg, client, http),
        policy=SamplePolicy(
            max_output_tokens=cfg.max_output_tokens,
            retries=cfg.retries,
            sample_text_chars=cfg.sample_text_chars,
            vote_text_chars=cfg.vote_text_chars,
        ),
    )


@lru_cache(maxsize=64)
def task_of(run_id: str) -> Task:
    """The run's task, read from Redis once per run and kept: samples carry only a step's input."""
    with store_errors(f"reading the task of run {run_id}"):
        raw, rule = resources().redis.hmget(keys.meta(run_id), ["task", "semantic_rule"])
    if raw is None:
        raise ConfigError(f"run {run_id} has no task definition in Redis (expired or never started)")
    task = load_task(json.loads(raw))
    if rule is None and task.semantic is not None and task.semantic.meanings:
        raise ConfigError(
            f"run {run_id} votes on meaning by a rule measured on its answer.meanings, and none is recorded: start "
            "it with maker run, maker vote or maker calibrate (or the Python API), which measure it first"
        )
    if rule is not None and task.semantic is not None:  # measured on the spec's answer.meanings as the run began
        measured = json.loads(rule)
        task.semantic = replace(task.semantic, threshold=measured["join"], open_below=measured["open_below"])
    return task


@lru_cache(maxsize=8)
def embedder_of(embeddings: str, base_url: str | None = None) -> Embedder:
    """The embedding model a run's `answer.embeddings` names (at `answer.embeddings_base_url`, if given), built
    once per worker process."""
    res = resources()
    return embedder_for(embeddings, settings(), res.redis, res.http, base_url)


@app.task(name=SAMPLE_TASK)
def sample(request: dict) -> None:
    res = resources()
    parsed = SampleRequest.model_validate(request)
    members = res.members
    member = members[parsed.member % len(members)]
    try:
        task = task_of(parsed.run_id)
        semantic = task.semantic
        embedder = None if semantic is None else embedder_of(semantic.embeddings, semantic.embeddings_base_url)
        # The request's counter turns the ensemble's models, then the task's phrasings of its prompt.
        variant = parsed.member // len(members)
        draw_sample(
            parsed, task, member, res.book, res.policy, by_model=len(members) > 1, embedder=embedder, variant=variant
        )
    except Exception as exc:
        # Unforeseen, so logged by Celery too; unrecorded, the orchestrator would wait out its timeout.
        record_failure(res.book, parsed, exc)
        raise


@app.task(name=EMBED_EXAMPLES_TASK)
def embed_examples(request: dict) -> None:
    """Embeds a semantic run's answer.meanings with the model its votes will use, here where the model's key and
    address are, and answers on the request's reply list: the orchestrator measures the run's rule on them."""
    res = resources()
    try:
        embedder = embedder_of(request["embeddings"], request.get("base_url"))
        vectors = []
        for text in request["texts"]:
            embedding = embedded(embedder, text, res.policy)
            assert embedding is not None  # wanted throughout: nothing turns it away
            vectors.append(embedding.vector)
        answer: dict = {"vectors": vectors}
    except Exception as exc:  # every failure goes back to the orchestrator, which says it
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    with store_errors("answering with the examples' embeddings"):
        res.redis.pipeline().rpush(request["reply"], json.dumps(answer)).expire(request["reply"], 600).execute()


@app.task(name=NOOP_TASK)
def noop(done_key: str) -> None:
    """Does nothing but say it ran: the floor the engine's per-sample cost is measured against."""
    resources().redis.rpush(done_key, 1)


@worker_init.connect
def _check_configuration(**_: object) -> None:
    """A misconfigured worker stops at once with the reason, instead of failing every task."""
    try:
        reach(resources().redis, settings().redis_url, "MAKER_REDIS_URL")
        metrics.serve(settings().metrics_port)
    except (MakerError, redis.RedisError) as exc:
        print(f"maker worker cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from exc


@worker_ready.connect
def _announce_ready(sender: Any = None, **_: object) -> None:
    """Say the line the embedded launcher waits for, once a stop signal can wake the worker's loop."""
    if sender is not None and sender.hub is not None:  # the consumer; its hub is the event loop, when it has one
        wake_on_signals(sender.hub)
    print(READY_LINE, flush=True)
