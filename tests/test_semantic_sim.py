"""Votes on meaning through real parts in one process: the simulated model's embeddings over HTTP, a worker's
sample pipeline on a real redis-server, the spec's checks, and the default threshold's measurement."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable

import httpx
import pytest
import redis

from maker_workers import keys
from maker_workers.domains.answers import DEFAULT_THRESHOLD
from maker_workers.domains.spec import SpecError, SpecTask, load_spec
from maker_workers.errors import ProviderError, Rejected
from maker_workers.pricing import Price
from maker_workers.providers.embeddings import OllamaEmbeddings, OpenAIEmbeddings
from maker_workers.providers.openai_compat import OpenAICompatible
from maker_workers.sampling import SamplePolicy, SampleRequest, draw_sample
from maker_workers.semantic import Embedder
from maker_workers.simllm.embed import embed
from maker_workers.simllm.oracles.triage import MEANINGS, phrase
from maker_workers.simllm.server import SimServer
from maker_workers.votes import Outcome, VoteBook
from orchestrator import api
from tests.conftest import ROOT, member, run_cli

FAST = SamplePolicy(max_output_tokens=750, retries=3, retry_max_wait_s=0.01)
TRIAGE = SpecTask(load_spec(ROOT / "examples" / "triage.yaml"))
EMBEDDING_PRICE = Price(input=0.02, output=0)  # text-embedding-3-small's list price, for a sim that bills


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def served(server: SimServer, http: httpx.Client, model: str) -> dict[str, int]:
    return http.get(server.url.removesuffix("/v1") + "/stats").json()["by_model"][model]


def test_the_default_threshold_separates_the_sims_paraphrases_from_its_other_meanings() -> None:
    """The measurement behind DEFAULT_THRESHOLD (docs/semantic.md, "the threshold"), redone on fresh phrasings."""
    rng = random.Random(2024)
    vectors = {m: [embed(phrase(m, rng)) for _ in range(40)] for m in MEANINGS}
    same = [cosine(a, b) for vs in vectors.values() for a, b in itertools.combinations(vs, 2)]
    other = [cosine(a, b) for m1, m2 in itertools.combinations(MEANINGS, 2) for a in vectors[m1] for b in vectors[m2]]
    assert min(same) > DEFAULT_THRESHOLD + 0.05 and max(other) < DEFAULT_THRESHOLD - 0.05
    assert len({phrase("double_charge", rng) for _ in range(40)}) >= 30  # exact matching sees few repeats


def test_the_sim_serves_one_embedding_in_openai_and_ollama_shapes_and_bills_it(
    start_sim: Callable[..., SimServer], http: httpx.Client
) -> None:
    server = start_sim()
    text = "The client was billed two times for one order."
    openai = OpenAIEmbeddings(http, base_url=server.url, model="sim-embed", api_key=None, name="sim").embed(text)
    ollama = OllamaEmbeddings(http, base_url=server.url.removesuffix("/v1"), model="sim-embed", api_key=None)
    assert openai.vector == pytest.approx(ollama.embed(text).vector) and len(openai.vector) == 256
    assert openai.tokens == 12
    assert served(server, http, "sim-embed") == {"requests": 2, "input_tokens": 24, "output_tokens": 0}


def test_an_exhausted_account_refuses_embeddings_as_it_refuses_completions(
    start_sim: Callable[..., SimServer], http: httpx.Client
) -> None:
    server = start_sim(quota_exhausted=True)
    with pytest.raises(Rejected, match="add credit"):
        OpenAIEmbeddings(http, base_url=server.url, model="sim-embed", api_key=None, name="sim").embed("x")


def request(sample_id: str, state: object) -> SampleRequest:
    return SampleRequest(
        run_id="r",
        step=0,
        input_hash=TRIAGE.input_hash(state, 0, None),
        state=state,
        sample_id=sample_id,
        temperature=0.5,
        k=5,
    )


def test_a_worker_embeds_each_answer_and_its_tokens_and_cost_match_what_the_sim_served(
    start_sim: Callable[..., SimServer], http: httpx.Client, book: VoteBook, client: redis.Redis
) -> None:
    server = start_sim(error_rate=0.0, malformed_rate=0.0, too_long_rate=0.0, rate_500=0.2, seed=3)
    provider = OpenAICompatible(http, base_url=server.url, model="sim-triage", api_key=None, name="sim")
    model = OpenAIEmbeddings(http, base_url=server.url, model="sim-embed", api_key=None, name="sim")
    embedder = Embedder("sim:sim-embed", model, None, EMBEDDING_PRICE)
    state = TRIAGE.initial_state()
    outcomes = [
        draw_sample(request(f"s{i}", state), TRIAGE, member(provider), book, FAST, embedder=embedder) for i in range(4)
    ]
    assert [o.outcome for o in outcomes if o] == [Outcome.VOTE] * 4
    stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats("r")).items()}
    billed = served(server, http, "sim-embed")["input_tokens"]
    assert stats["embedding_calls"] == 4 and stats["embedding_tokens"] == billed > 0
    assert stats["embedding_cost_nusd"] == stats["cost_nusd"] == pytest.approx(1000 * 0.02 * billed, abs=4)
    assert len(book.tally(request("s0", state).contest)) == 1  # four phrasings, one meaning


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"format": "text", "match": "semantic"}, "answer.embeddings: required when answer.match is semantic"),
        ({"format": "text", "threshold": 0.7}, "answer.threshold: only applies when answer.match is semantic"),
        ({"format": "text", "match": "fuzzy"}, "answer.match: unknown match 'fuzzy'"),
        ({"format": "text", "match": "semantic", "embeddings": "cohere:x"}, "answer.embeddings: 'cohere:x' names no"),
        ({"format": "hanoi", "match": "semantic", "embeddings": "sim"}, "answer.match: semantic matching is for"),
        (
            {"format": "json", "vote_on": ["q", "r"], "match": "semantic", "embeddings": "sim", "exact_fields": ["x"]},
            "answer.exact_fields: 'x' is not among the voted fields (q, r)",
        ),
        (
            {"format": "json", "vote_on": ["q"], "match": "semantic", "embeddings": "sim", "exact_fields": ["q"]},
            "answer.exact_fields: leaves no field to compare by meaning",
        ),
        (
            {"format": "text", "match": "semantic", "embeddings": "sim", "exact_fields": ["x"]},
            "answer.exact_fields: only",
        ),
        (  # without vote_on, a json answer's fields are its schema's
            {
                "format": "json",
                "schema": {"type": "object", "properties": {"queue": {}, "reason": {}}},
                "match": "semantic",
                "embeddings": "sim",
                "exact_fields": ["queu"],
            },
            "answer.exact_fields: 'queu' is not among the voted fields (queue, reason)",
        ),
        (
            {"format": "text", "match": "semantic", "embeddings": "sim", "max_candidates": 100000},
            "answer.max_candidates:",
        ),
    ],
)
def test_a_bad_semantic_answer_spec_is_one_error_naming_its_field(answer: dict, message: str) -> None:
    with pytest.raises(SpecError, match="^" + re.escape(message)):
        api.answer_spec(answer)


def test_maker_vote_names_the_flag_a_semantic_vote_lacks() -> None:
    done = run_cli("vote", "--prompt", "Ticket: I was charged twice", "--format", "json", "--match", "semantic")
    assert done.returncode == 2
    assert "--embeddings: required when --match is semantic" in done.stderr


def embeddings_answering(*responses: httpx.Response) -> OpenAIEmbeddings:
    queue = list(responses)
    client = httpx.Client(transport=httpx.MockTransport(lambda _: queue.pop(0) if len(queue) > 1 else queue[0]))
    return OpenAIEmbeddings(client, base_url="http://llm.test/v1", model="text-embedding-3-small", api_key="sk-secret")


def test_an_embedding_call_is_retried_after_a_429_as_a_completion_is(
    sim_server: SimServer, http: httpx.Client, book: VoteBook, client: redis.Redis
) -> None:
    limited = httpx.Response(429, headers={"retry-after-ms": "5"}, json={"error": {"message": "slow down"}})
    ok = httpx.Response(200, json={"data": [{"embedding": [0.6, 0.8]}], "usage": {"prompt_tokens": 9}})
    embedder = Embedder("openai:text-embedding-3-small", embeddings_answering(limited, ok), None, EMBEDDING_PRICE)
    provider = OpenAICompatible(http, base_url=sim_server.url, model="sim-triage", api_key=None, name="sim")
    recorded = draw_sample(
        request("s1", TRIAGE.initial_state()), TRIAGE, member(provider), book, FAST, embedder=embedder
    )
    assert recorded is not None and recorded.outcome is Outcome.VOTE
    kinds = [fields[b"kind"] for _, fields in client.xrange(keys.events("r"))]
    assert b"rate_limit_wait" in kinds and client.hget(keys.stats("r"), "embedding_tokens") == b"9"


def test_an_answer_that_is_not_an_embedding_is_a_provider_error_that_never_shows_the_key() -> None:
    bad = embeddings_answering(httpx.Response(200, json={"data": []}))
    with pytest.raises(ProviderError, match="not an embedding"):
        bad.embed("x")
    refused = embeddings_answering(httpx.Response(401, json={"error": {"message": "bad key sk-secret"}}))
    with pytest.raises(Rejected) as caught:
        refused.embed("x")
    assert "sk-secret" not in str(caught.value) and "OPENAI_API_KEY" in str(caught.value)
