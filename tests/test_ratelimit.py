"""The shared rate limiter's Lua script on a real Redis, and its waits as events of the run."""

from __future__ import annotations

import httpx
import pytest
import redis

from maker_workers import keys
from maker_workers.domains import hanoi
from maker_workers.errors import ConfigError
from maker_workers.providers.openai_compat import OpenAICompatible
from maker_workers.ratelimit import RateLimiter
from maker_workers.sampling import SamplePolicy, SampleRequest, draw_sample
from maker_workers.simllm.server import SimServer
from maker_workers.votes import VoteBook


def test_a_burst_goes_at_once_and_the_rest_is_spaced_at_the_rate(client: redis.Redis) -> None:
    limiter = RateLimiter(client, keys.rate_limit("sim", "m"), per_minute=600, burst=3)  # 10 a second
    waits = [limiter.reserve() for _ in range(8)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    for i, wait in enumerate(waits[3:], start=1):
        assert wait == pytest.approx(0.1 * i, abs=0.02)  # slot i after the burst: i intervals away


def test_workers_share_one_rate(client: redis.Redis) -> None:
    one = RateLimiter(client, keys.rate_limit("sim", "m"), per_minute=60, burst=1)
    other = RateLimiter(redis.Redis(connection_pool=client.connection_pool), keys.rate_limit("sim", "m"), 60, 1)
    assert one.reserve() == 0.0
    assert other.reserve() == pytest.approx(1.0, abs=0.02)  # the second worker waits for the first's slot
    assert RateLimiter(client, keys.rate_limit("sim", "other-model"), 60, 1).reserve() == 0.0


def test_bad_limits_are_clear_errors(client: redis.Redis) -> None:
    with pytest.raises(ConfigError, match="rate limit"):
        RateLimiter(client, "k", per_minute=0)


def test_waits_are_events_of_the_run(client: redis.Redis, sim_server: SimServer) -> None:
    limiter = RateLimiter(client, keys.rate_limit("sim", "sim"), per_minute=120, burst=1)  # 0.5 s apart
    assert limiter.reserve() == 0.0  # another worker just took the free slot
    with httpx.Client() as http:
        provider = OpenAICompatible(http, base_url=sim_server.url, model="sim", api_key=None)
        task = hanoi.HanoiTask(3)
        state = task.initial_state()
        request = SampleRequest(
            run_id="r",
            step=0,
            input_hash=task.input_hash(state, 0, None),
            state=state,
            sample_id="s",
            temperature=0.1,
            k=5,
        )
        draw_sample(request, task, provider, VoteBook(client), SamplePolicy(), limiter)
    events = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(keys.events("r"))]
    assert [e["kind"] for e in events] == ["rate_limit_wait", "vote"]
    assert "for the shared rate" in events[0]["detail"]
