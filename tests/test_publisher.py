"""The orchestrator builds its task messages with Celery's own parts, skipping `send_task`'s costs: the message on
the wire must stay the one `send_task` would send, whatever Celery version is installed."""

from __future__ import annotations

import json

import redis

from maker_workers.celery_app import SAMPLE_TASK, make_app
from maker_workers.sampling import SampleRequest
from orchestrator.engine.publisher import LATER, Publisher


def _queued(client: redis.Redis) -> list[dict]:
    queues = [key for key in client.keys("maker*") if client.type(key) == b"list"]
    assert len(queues) == 1, queues  # one priority step: both went to the same list
    return [json.loads(raw) for raw in reversed(client.lrange(queues[0], 0, -1))]  # oldest first


def test_a_published_sample_is_the_message_celerys_send_task_sends(redis_url: str, client: redis.Redis) -> None:
    broker = make_app(redis_url)
    request = SampleRequest(
        run_id="r1", step=7, input_hash="h", state={"pegs": [[2, 1], [], []]}, sample_id="s-1", temperature=0.0, k=3
    )
    Publisher(broker).send_many([(request, "step 7", LATER)])
    with broker.connection_for_write() as connection:
        broker.send_task(
            SAMPLE_TASK,
            args=[request.model_dump(mode="json")],
            task_id="s-1",
            argsrepr="step 7",
            priority=LATER,
            connection=connection,
            declare=[],
        )
    ours, celerys = _queued(client)
    assert ours["headers"] == celerys["headers"]
    assert ours["body"] == celerys["body"] and ours["content-type"] == celerys["content-type"]
    for name in ("priority", "delivery_info", "correlation_id", "delivery_mode", "body_encoding"):
        assert ours["properties"][name] == celerys["properties"][name], name
