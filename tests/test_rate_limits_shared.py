"""Two real worker processes under one shared RPM and TPM, measured where the requests land: the server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from maker_workers import keys
from maker_workers.celery_app import SAMPLE_TASK, make_app
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.ratelimit import TOKEN_BURST_SHARE
from maker_workers.sampling import SampleRequest
from maker_workers.simllm.model import SimConfig
from maker_workers.simllm.server import SimServer
from maker_workers.tasks import READY_LINE
from orchestrator.cluster.embedded import Process, worker_argv
from orchestrator.engine.store import RunStore

RPM = 240  # four requests a second
TPM = 45_000  # 750 tokens a second: about three Hanoi requests, so the tokens bind once the burst is spent
BURST = 2
TOKEN_BURST = TPM * TOKEN_BURST_SHARE
MAX_AHEAD_S = 2.0  # short, so that 16 worker threads find the rate fully booked and must come back
SAMPLES = 60
SLACK_S = 0.05  # between a booked slot in Redis and the request's arrival at the server


@pytest.fixture
def metered_sim() -> Iterator[tuple[SimServer, list[tuple[float, int]]]]:
    """The sim, noting when each answered request arrived and the tokens it served."""
    server = SimServer("127.0.0.1", 0, SimConfig(error_rate=0.0, malformed_rate=0.0, too_long_rate=0.0))
    served: list[tuple[float, int]] = []
    handle = server.app.handle

    def metered(*args: Any, **kwargs: Any) -> tuple[float, bytes | None]:
        arrived = time.monotonic()
        delay, response = handle(*args, **kwargs)
        if response is not None and response.startswith(b"HTTP/1.1 200"):
            usage = json.loads(response.partition(b"\r\n\r\n")[2]).get("usage", {})
            served.append((arrived, usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)))
        return delay, response

    server.app.handle = metered  # type: ignore[method-assign]
    server.start_in_thread()
    yield server, served
    server.shutdown()
    server.server_close()


def worst_excess(served: list[tuple[float, int]], per_second: float, weight: bool) -> float:
    """The most any stretch of arrivals exceeds the steady rate by: what a burst may add, and no more."""
    worst = 0.0
    for i, (start, _) in enumerate(served):
        total = 0
        for end, tokens in served[i:]:
            total += tokens if weight else 1
            worst = max(worst, total - per_second * (end - start + SLACK_S))
    return worst


def test_two_workers_stay_within_one_shared_rpm_and_tpm(
    client: redis.Redis, redis_url: str, metered_sim: tuple[SimServer, list[tuple[float, int]]]
) -> None:
    sim, served = metered_sim
    task, run_id = HanoiTask(3), "shared"
    RunStore(client, run_id).start(task.definition(), {"k": 1_000})  # no step is decided: every sample is drawn
    env = {
        "MAKER_REDIS_URL": redis_url,
        "MAKER_BROKER_URL": redis_url,
        "MAKER_PROVIDER": "sim",
        "MAKER_BASE_URL": sim.url,
        "MAKER_RATE_LIMIT_PER_MINUTE": str(RPM),
        "MAKER_RATE_LIMIT_BURST": str(BURST),
        "MAKER_TOKENS_PER_MINUTE": str(TPM),
        "MAKER_RATE_LIMIT_MAX_AHEAD_S": str(MAX_AHEAD_S),
    }
    workers = [Process(f"worker-{i}", worker_argv(8, f"limits{i}"), READY_LINE, env) for i in range(2)]
    app = make_app(redis_url)
    try:
        for worker in workers:
            worker.wait_ready(30)
        state = task.initial_state()
        for i in range(SAMPLES):
            request = SampleRequest(
                run_id=run_id,
                step=0,
                input_hash=task.input_hash(state, 0, None),
                state=state,
                sample_id=f"s{i}",
                temperature=0.5,
                k=1_000,
            )
            app.send_task(SAMPLE_TASK, args=[request.model_dump(mode="json")])
        for _ in range(SAMPLES):
            notice = client.blpop([keys.notify(run_id)], timeout=30)
            assert notice is not None, "\n".join(worker.tail() for worker in workers)
            assert json.loads(notice[1])["outcome"] == "vote"
    finally:
        app.close()
        for worker in workers:
            worker.stop()

    assert len(served) == SAMPLES
    excess_requests = worst_excess(served, RPM / 60, weight=False)
    excess_tokens = worst_excess(served, TPM / 60, weight=True)
    waits = [
        (float(fields[b"wait_s"]), fields[b"detail"].decode())
        for _, fields in client.xrange(keys.events(run_id))
        if fields[b"kind"] == b"rate_limit_wait"
    ]
    span = served[-1][0] - served[0][0]
    print(
        f"\n{SAMPLES} requests in {span:.1f} s; beyond the steady rate: {excess_requests:.2f} requests "
        f"(burst {BURST}), {excess_tokens:.0f} tokens (burst {TOKEN_BURST:.0f}); "
        f"{len(waits)} waits, longest {max((w for w, _ in waits), default=0):.3f} s (bound {MAX_AHEAD_S} s), "
        f"{sum('fully booked' in d for _, d in waits)} of them unbooked"
    )
    assert excess_requests <= BURST
    assert excess_tokens <= TOKEN_BURST
    assert all(wait <= MAX_AHEAD_S for wait, _ in waits)
    assert any("fully booked" in detail for _, detail in waits)  # the bound was met, and held
