"""`maker mcp` as a host drives it, in memory and over stdio, on real clusters: jobs, votes, checks, bad inputs."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import yaml
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from maker_workers.domains import hanoi
from orchestrator.cluster.connect import ClusterOptions
from orchestrator.cluster.embedded import Embedded, free_port
from orchestrator.interfaces.mcp_server import MakerTools, mcp_server
from orchestrator.planning.method import k_min
from tests.conftest import ROOT, run_cli, user_env

TOOLS = {
    "submit_hanoi",
    "submit_task",
    "job_status",
    "job_result",
    "cancel_job",
    "list_jobs",
    "vote",
    "validate",
    "plan",
    "calibrate",
}
MULTIPLY: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "multiply.yaml").read_text())
SECRET = "sk-test-0123456789-never-shown"


class Host:
    """An MCP host's side of a session: calls tools and keeps every answer it got."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transcript: list[str] = []

    async def answer(
        self, tool: str, arguments: dict[str, Any], heard: list[tuple[float, float | None]] | None = None
    ) -> CallToolResult:
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            if heard is not None:
                heard.append((progress, total))

        result = await self.client.call_tool(tool, arguments, progress_callback=on_progress)
        self.transcript += [block.text for block in result.content if block.type == "text"]
        self.transcript.append(json.dumps(result.structured_content))
        return result

    async def call(self, tool: str, heard: list[tuple[float, float | None]] | None = None, **arguments: Any) -> Any:
        result = await self.answer(tool, arguments, heard)
        assert not result.is_error, result.content
        return result.structured_content

    async def refused(self, tool: str, **arguments: Any) -> str:
        result = await self.answer(tool, arguments)
        assert result.is_error, result.structured_content
        text = result.content[0].text
        assert "Traceback" not in text
        return text


@pytest.fixture(scope="module")
def tools(cluster: Embedded) -> Iterator[MakerTools]:
    """The tools of a server on the module's cluster, as `maker mcp --redis-url URL` has them."""
    service = MakerTools(ClusterOptions(redis_url=cluster.redis_url))
    yield service
    service.close()


def hosted(client: Callable[[], Client], scenario: Callable[[Host], Any]) -> Host:
    async def session() -> Host:
        async with client() as connected:
            host = Host(connected)
            await scenario(host)
            return host

    return anyio.run(session)


async def runs_every_kind_of_work(host: Host) -> None:
    listed = await host.client.list_tools()
    assert {tool.name for tool in listed.tools} == TOOLS
    assert all(tool.input_schema.get("properties") and tool.output_schema for tool in listed.tools)

    job = await host.call("submit_hanoi", disks=4)
    assert job["total_steps"] == 15 and job["k"] == 3
    heard: list[tuple[float, float | None]] = []
    status = await host.call("job_status", heard=heard, job_id=job["job_id"], wait_s=60)
    assert status["state"] == "done" and status["steps_done"] == 15 and status["samples"] >= 45
    assert heard and heard[-1] == (15, 15)  # a progress notification at each new step count, the last at the end
    result = await host.call("job_result", job_id=job["job_id"])
    assert result["report"]["steps"] == 15 and result["report"]["errors"] == 0 and result["report"]["solved"]

    state = hanoi.initial_state(4)
    question = {"prompt": hanoi.user_prompt(state, None), "system": hanoi.system_prompt(4), "format": "hanoi"}
    decision = await host.call("vote", **question)
    assert decision["decided"] and decision["winner"] == {"move": [1, 0, 1], "next_state": [[4, 3, 2], [1], []]}
    assert decision["sample_count"] >= 3 and decision["tally"]
    assert all(s["text"] and s["verdict"] in ("vote", "red_flag", "late") for s in decision["samples"])

    task = await host.call("submit_task", spec=MULTIPLY)
    status = await host.call("job_status", job_id=task["job_id"], wait_s=60)
    assert status["state"] == "done", status
    final = (await host.call("job_result", job_id=task["job_id"]))["report"]["final_state"]
    assert int(final["out"]) == int(MULTIPLY["initial_state"]["a"]) * MULTIPLY["initial_state"]["b"]

    long_job = await host.call("submit_hanoi", disks=12)
    running = await host.call("job_status", job_id=long_job["job_id"], wait_s=1)
    assert running["state"] in ("queued", "running") and running["total_steps"] == 4095
    assert "no result yet" in await host.refused("job_result", job_id=long_job["job_id"])
    asked = time.monotonic()
    stopped = await host.call("cancel_job", job_id=long_job["job_id"])
    assert time.monotonic() - asked < 10
    assert stopped["state"] == "cancelled" and stopped["cancel_requested"] and stopped["steps_done"] < 4095
    report = (await host.call("job_result", job_id=long_job["job_id"]))["report"]
    assert report["failure"] == "cancelled" and report["steps"] == stopped["steps_done"]

    jobs = (await host.call("list_jobs"))["jobs"]
    assert [j["job_id"] for j in jobs[:3]] == [long_job["job_id"], task["job_id"], job["job_id"]]


def test_a_host_in_memory_runs_jobs_votes_and_cancels(tools: MakerTools) -> None:
    hosted(lambda: Client(mcp_server(tools)), runs_every_kind_of_work)


def test_a_host_over_stdio_does_the_same_on_the_embedded_default_and_never_sees_a_key() -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orchestrator.interfaces.cli", "mcp"],
        cwd=ROOT,
        env=user_env(MAKER_API_KEY=SECRET),
    )
    host = hosted(lambda: Client(server), runs_every_kind_of_work)
    assert not any(SECRET in text for text in host.transcript)
    deadline = time.monotonic() + 10
    while processes_with(SECRET) and time.monotonic() < deadline:  # the server, its Redis, workers and sim-llm
        time.sleep(0.1)
    assert not processes_with(SECRET), "the embedded cluster outlived the server"


def processes_with(text: str) -> list[int]:
    """The processes whose environment holds `text`: every process the stdio server started inherits it."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and text.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


async def refuses_bad_inputs(host: Host) -> None:
    assert "greater than or equal to 1" in await host.refused("submit_hanoi", disks=-3)
    assert "less than or equal to 20" in await host.refused("submit_hanoi", disks=21)
    assert "k\n  Input should be greater than or equal to 1" in await host.refused("submit_hanoi", disks=4, k=0)
    assert "not both" in await host.refused("submit_hanoi", disks=4, k=3, target_reliability=0.9)
    assert "above this server's limit of 50" in await host.refused(
        "submit_hanoi", disks=20, target_reliability=0.999, p=0.55
    )
    assert "'json', 'regex', 'text' or 'hanoi'" in await host.refused("vote", prompt="Compute: 1 + 1", format="xml")
    assert "at most 65536 characters" in await host.refused("vote", prompt="x" * 1_000_000)
    assert "answer.pattern: required" in await host.refused("vote", prompt="Compute: 1 + 1", format="regex")
    assert "leave provider and model out" in await host.refused("vote", prompt="Compute: 1 + 1", provider="openai")
    assert "Extra inputs are not permitted" in await host.refused("vote", prompt="Compute: 1 + 1", kk=3)
    escaping = {**MULTIPLY, "prompt": "{{ state.__class__.__mro__ }}"}
    assert "prompt: the template tries to reach outside the sandbox" in await host.refused("submit_task", spec=escaping)
    huge = {**MULTIPLY, "initial_state": {**MULTIPLY["initial_state"], "a": "7" * 300_000}}
    assert "over the limit of 262144" in await host.refused("submit_task", spec=huge)
    blowing_up = {**MULTIPLY, "prompt": '{{ "x" * 50000000 }}'}
    assert "the template does too much" in await host.refused("submit_task", spec=blowing_up)
    endless = {**MULTIPLY, "prompt": "{% for i in range(99999) %}" * 3 + "{% endfor %}" * 3}
    assert "over 100,000 iterations" in await host.refused("submit_task", spec=endless)
    assert "max_samples (3) is below k (4)" in await host.refused("submit_hanoi", disks=4, k=4, max_samples=3)
    for tool in ("job_status", "job_result", "cancel_job"):
        assert "no job '0123456789ab'" in await host.refused(tool, job_id="0123456789ab")
    assert "should match pattern" in await host.refused("job_status", job_id="../../etc")


def test_bad_inputs_are_tool_errors_that_say_what_is_wrong(tools: MakerTools) -> None:
    hosted(lambda: Client(mcp_server(tools)), refuses_bad_inputs)


def test_a_call_may_not_choose_another_model_than_the_server_started_with() -> None:
    tools = MakerTools(ClusterOptions())  # embedded default, not started: the refusal comes first

    async def refuses(host: Host) -> None:
        refusal = await host.refused("submit_hanoi", disks=3, provider="openai", model="gpt-4.1-mini")
        assert "this server's workers call sim:sim-hanoi" in refusal and "maker mcp --provider openai" in refusal
        assert (await host.call("list_jobs"))["jobs"] == []

    try:
        hosted(lambda: Client(mcp_server(tools)), refuses)
        assert not tools.cluster.started
    finally:
        tools.close()


def test_a_restarted_server_lists_follows_and_cancels_the_jobs_before_it(cluster: Embedded) -> None:
    first, second = (MakerTools(ClusterOptions(redis_url=cluster.redis_url)) for _ in range(2))

    async def two_servers() -> None:
        async with Client(mcp_server(first)) as a, Client(mcp_server(second)) as b:
            before, after = Host(a), Host(b)
            job_id = (await before.call("submit_hanoi", disks=12))["job_id"]
            assert job_id in [j["job_id"] for j in (await after.call("list_jobs"))["jobs"]]
            assert (await after.call("job_status", job_id=job_id, wait_s=1))["state"] == "running"
            assert (await after.call("cancel_job", job_id=job_id))["cancel_requested"]
            assert (await after.call("job_status", job_id=job_id, wait_s=15))["state"] == "cancelled"
            await before.call("job_status", job_id=job_id, wait_s=15)  # its driver has recorded the report
            report = (await after.call("job_result", job_id=job_id))["report"]
            assert report["failure"] == "cancelled" and 0 < report["steps"] < 4095

    try:
        anyio.run(two_servers)
    finally:
        first.close()
        second.close()


async def checks_responses_and_plans(host: Host) -> None:
    right = "Reasoning.\nmove = [1, 0, 1]\nnext_state = [[4, 3, 2], [1], []]"
    valid = await host.call("validate", response=right, format="hanoi", pegs=[[4, 3, 2, 1], [], []])
    assert valid["valid"] and valid["answer"] == {"move": [1, 0, 1], "next_state": [[4, 3, 2], [1], []]}
    flagged = await host.call("validate", response="x" * 4000 + right, format="hanoi", max_output_tokens=750)
    assert [f["reason"] for f in flagged["red_flags"]] == ["too_long"] and flagged["output_tokens"] > 750
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    wrong = await host.call("validate", response='{"answer": "42"}', format="json", schema=schema)
    assert not wrong["valid"] and wrong["red_flags"][0]["reason"] == "schema"
    nothing = await host.call("validate", response="I do not know", format="json")
    assert nothing["red_flags"] == [{"reason": "parse", "detail": "no JSON object in the response"}]

    steps = 2**20 - 1
    plan = await host.call(
        "plan", p=0.99, steps=steps, target=0.95, price_in=0.4, price_out=1.6, tokens_in=300, tokens_out=80
    )
    assert plan["k_min"] == k_min(0.99, steps, 0.95) and plan["p_full"] >= 0.95
    assert plan["expected_samples_total"] == pytest.approx(plan["expected_samples_per_step"] * steps)
    assert plan["projected_cost_usd"] == pytest.approx(plan["expected_samples_total"] * 0.000248)
    assert "greater than 0.5" in await host.refused("plan", p=0.4, steps=10, target=0.9)

    measured = await host.call("calibrate", disks=6, samples=40, seed=1)  # the cluster's sim: 1% wrong
    # The cluster's threads draw in no fixed order, so the sim's 99% may fall outside a 95% interval (1 run in
    # 16 did): check the interval is a sane one around the measured p and far from a badly wrong model.
    assert measured["samples"] == 40 and measured["p_low"] <= measured["p"] <= measured["p_high"]
    assert measured["p_high"] >= 0.95
    assert "samples" in await host.refused("calibrate", disks=6, samples=5)


def test_validate_flags_each_problem_and_plan_follows_the_formulas(tools: MakerTools) -> None:
    hosted(lambda: Client(mcp_server(tools)), checks_responses_and_plans)


def test_streamable_http_refuses_a_request_without_the_token(cluster: Embedded) -> None:
    port, token = free_port(), "token-of-this-test"
    argv = [
        sys.executable,
        "-m",
        "orchestrator.interfaces.cli",
        "mcp",
        "--transport",
        "streamable-http",
        "--port",
        str(port),
    ]
    env = user_env(MAKER_MCP_TOKEN=token, MAKER_REDIS_URL=cluster.redis_url)
    with subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as server:
        try:
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            url = f"http://127.0.0.1:{port}/mcp"
            ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            accept = {"Accept": "application/json, text/event-stream"}
            assert httpx.post(url, json=ping, headers=accept).status_code == 401
            wrong = {**accept, "Authorization": "Bearer not-the-token"}
            assert httpx.post(url, json=ping, headers=wrong).status_code == 401

            async def lists_tools() -> set[str]:
                headers = {"Authorization": f"Bearer {token}"}
                async with (
                    httpx2.AsyncClient(headers=headers) as http,
                    Client(streamable_http_client(url, http_client=http)) as client,
                ):
                    return {tool.name for tool in (await client.list_tools()).tools}

            assert anyio.run(lists_tools) == TOOLS
        finally:
            server.terminate()
            server.wait(15)


def test_a_server_off_loopback_needs_a_token() -> None:
    result = run_cli("mcp", "--transport", "streamable-http", "--host", "0.0.0.0", "--port", "1", timeout=60)
    assert result.returncode == 2 and "--token" in result.stderr


def test_a_loopback_address_the_host_check_does_not_cover_needs_a_token_too() -> None:
    # The SDK checks the Host header (against DNS rebinding) only for 127.0.0.1, localhost and ::1.
    result = run_cli("mcp", "--transport", "streamable-http", "--host", "127.0.0.2", "--port", "1", timeout=60)
    assert result.returncode == 2 and "--token" in result.stderr and "DNS-rebinding" in result.stderr
