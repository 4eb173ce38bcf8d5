"""The simulated model's profiles (`--sim-profile`): the paper's measured models, and the shapes that make
them realistic: answer length, step difficulty, latency. Statistics come from in-process SimModel calls,
each against a fixed seed; one check goes over real HTTP, and one real 5-disk run through `maker hanoi`."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import statistics

import httpx
import pytest
from pydantic import ValidationError

from maker_workers.domains import hanoi
from maker_workers.simllm.model import MUSINGS, Answer, SimConfig, SimModel, count_tokens
from maker_workers.simllm.oracles import read_prompt
from maker_workers.simllm.profiles import PROFILES
from maker_workers.simllm.server import SimServer
from tests.conftest import run_cli
from tests.test_oracles import NAMES, case, parse

RED_FLAG = 750
# (per-step error, mean output tokens): the paper's calibration
FIGURES = {
    "gpt-4.1-mini": (0.0022, 538),
    "gpt-4.1-nano": (0.3571, 842),
    "o3-mini": (0.0018, 535),
    "gpt-oss-20b": (0.0358, 1104),
    "haiku-4.5": (0.1839, 588),
}


def hanoi_prompts(disks: int) -> list[str]:
    """The user prompt of every step of a solved puzzle: all different, so each step's difficulty is its own."""
    state, previous, prompts = hanoi.initial_state(disks), None, []
    for move in hanoi.optimal_moves(disks):
        prompts.append(hanoi.user_prompt(state, previous))
        state, previous = hanoi.apply_move(state, move), move
    return prompts


PROMPTS = hanoi_prompts(12)


def right_text(prompt: str) -> str:
    problem = read_prompt(prompt)
    return problem.render(problem.right(random.Random(0)))


RIGHT = {prompt: right_text(prompt) for prompt in PROMPTS}


def binomial_99(n: int, p: float) -> tuple[int, int]:
    """The counts outside which a Binomial(n, p) falls with chance at most 0.5% on either side."""
    log_pmf = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
        for k in range(n + 1)
    ]
    pmf = [math.exp(x) for x in log_pmf]
    low, tail = 0, 0.0
    while tail + pmf[low] <= 0.005:
        tail += pmf[low]
        low += 1
    high, tail = n, 0.0
    while tail + pmf[high] <= 0.005:
        tail += pmf[high]
        high -= 1
    return low, high


# --- no profile: nothing changes ----------------------------------------------------------------------

# Captured before profiles existed: every answer (text, tokens, truncation) and latency draw of three
# configs over a 4-disk puzzle and one prompt of each other oracle, at T = 0 and 0.1, with and without a limit.
BEFORE = {
    "default": "3ba4c391bc62dda80d6a04b9ebc1301c25a70faede745b8c7957bf18c0026bb9",
    "noisy": "6f79f23f8e1e7fbfd4db56aa203add9ea23afe7f70ddc4e956ad72847e3976f5",
    "revised": "4dfb108827c485b344fe73c2def23d1eb215454f5243d746114eaaf8c613151c",
}
BEFORE_REVISED_77 = (
    "The previous move was none, so I follow the strategy.\nmove = [1, 0, 2]\nnext_state = [[4, 3, 2], [], [1]]\n"
    "Wait, that is not right. Corrected:\nThe previous move was none, so I follow the strategy.\n"
    "move = [1, 0, 1]\nnext_state = [[4, 3, 2], [1], []]|62|False|0.00010128339236253391"
)
BEFORE_NOISY_40 = (
    "The previous move was [1, 0, 1], so I follow the strategy.\nmove = [1, 1, 2]\n"
    "next_state = [[4, 3, 2], [], [1]]|28|False|0.0"
)


MUSING = re.compile(" ".join(f"(?:{'|'.join(map(re.escape, words))})" for words in MUSINGS) + "\n")


def replay(config: SimConfig) -> list[str]:
    model = SimModel(config)
    others = [
        "Balance: 10.00\nEntry: -3.50",
        "Digit: 7\nMultiplier: 8\nCarry in: 3",
        "Current list: [3, 1, 2]",
        "Compute: 12 * (3 + 4)",
    ]
    texts = []
    for i in range(5):
        for prompt in hanoi_prompts(4) + others:
            for temperature in (0.0, 0.1):
                a = model.answer(prompt, temperature, 751 if i % 2 else None)
                text, tokens = a.text, a.output_tokens
                if MUSING.match(text):  # the wording above T=0 varies (the line was added since): as before without it
                    text = MUSING.sub("", text, count=1)
                    tokens = count_tokens(text)
                texts.append(f"{text}|{tokens}|{a.truncated}|{model.latency_s()}")
    return texts


def test_without_a_profile_answers_and_latencies_are_byte_identical_to_before() -> None:
    configs = {
        "default": SimConfig(),
        "noisy": SimConfig(error_rate=0.3, malformed_rate=0.1, too_long_rate=0.1, seed=5),
        "revised": SimConfig(error_rate=0.2, revised_rate=0.5, seed=3, latency_ms=5.0),
    }
    replays = {name: replay(config) for name, config in configs.items()}
    assert replays["revised"][77] == BEFORE_REVISED_77
    assert replays["noisy"][40] == BEFORE_NOISY_40
    digests = {name: hashlib.sha256("\n\x00".join(texts).encode()).hexdigest() for name, texts in replays.items()}
    assert digests == BEFORE


# --- a profile is a set of SimConfig values ------------------------------------------------------------


def test_a_profile_sets_its_values_and_given_ones_override_them() -> None:
    mini = SimConfig(profile="gpt-4.1-mini")
    assert (mini.error_rate, mini.output_tokens, mini.too_long_rate) == (0.0022, 538, 0.0)
    assert mini.latency_floor_ms > 0 and mini.latency_sigma > 0 and mini.hard_step_share == 0.1
    given = SimConfig(profile="gpt-4.1-mini", error_rate=0.1, latency_scale=0.01, seed=4)
    assert (given.error_rate, given.latency_scale, given.seed, given.output_tokens) == (0.1, 0.01, 4, 538)
    as_flags = {name: str(value) for name, value in given.model_dump().items()}  # as `sim-llm serve` gets them
    assert SimConfig(**as_flags | {"profile": "gpt-4.1-mini", "api_key": None}) == given
    assert set(PROFILES) == set(FIGURES)
    with pytest.raises(ValidationError, match=re.escape("unknown profile 'gpt-5'; known: gpt-4.1-mini")):
        SimConfig(profile="gpt-5")
    with pytest.raises(ValidationError, match="hard_step_max"):
        SimConfig(hard_step_share=0.5, hard_step_max=5)


def test_the_cli_names_an_unknown_profile() -> None:
    result = run_cli("sim-llm", "serve", "--port", "0", "--sim-profile", "gpt-5", timeout=30)
    assert result.returncode == 2
    assert "--sim-profile" in result.stderr and "haiku-4.5" in result.stderr


# --- the paper's figures --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FIGURES))
def test_each_profile_is_wrong_as_often_and_as_long_as_the_paper_measured(name: str) -> None:
    figure, mean_tokens = FIGURES[name]
    model = SimModel(SimConfig(profile=name, malformed_rate=0.0, seed=3))  # every answer parses but over-long ones
    answers = [(prompt, model.answer(prompt, 0.1, None)) for prompt in PROMPTS]  # one a step: independent draws
    kept = [(prompt, a) for prompt, a in answers if a.output_tokens <= RED_FLAG]
    wrong = sum(not a.text.endswith(RIGHT[prompt]) for prompt, a in kept)
    low, high = binomial_99(len(kept), figure)
    assert low <= wrong <= high, f"{wrong} wrong of {len(kept)} kept, expected {figure}"
    tokens = [a.output_tokens for _, a in answers]
    assert statistics.mean(tokens) == pytest.approx(mean_tokens, rel=0.03)
    cfg = model.config
    mu = math.log(cfg.output_tokens) - cfg.output_tokens_sigma**2 / 2
    too_long = 1 - 0.5 * (1 + math.erf((math.log(RED_FLAG + 0.5) - mu) / (cfg.output_tokens_sigma * math.sqrt(2))))
    assert (len(answers) - len(kept)) / len(answers) == pytest.approx(too_long, abs=0.02)


def test_an_over_long_answer_comes_cut_over_http_and_a_kept_one_parses(http: httpx.Client) -> None:
    server = SimServer("127.0.0.1", 0, SimConfig(profile="gpt-oss-20b", latency_scale=0.0, seed=2))
    server.start_in_thread()
    try:
        health = http.get(f"{server.url}/health").json()
        bodies = [
            http.post(
                f"{server.url}/chat/completions",
                json={"model": "sim", "messages": hanoi.messages(state, previous), "max_tokens": RED_FLAG + 1},
            ).json()
            for state, previous in [(hanoi.initial_state(7), None)] * 40
        ]
    finally:
        server.shutdown()
        server.server_close()
    assert health["config"]["profile"] == "gpt-oss-20b" and health["config"]["output_tokens"] == 1104
    cut = [b for b in bodies if b["choices"][0]["finish_reason"] == "length"]
    kept = [b for b in bodies if b["choices"][0]["finish_reason"] == "stop"]
    assert len(cut) > len(kept) > 0  # gpt-oss-20b runs past the 750-token red flag most of the time
    assert all(b["usage"]["completion_tokens"] == RED_FLAG + 1 for b in cut)
    for body in kept:
        assert 300 < body["usage"]["completion_tokens"] <= RED_FLAG
        text = body["choices"][0]["message"]["content"]
        assert text.startswith("Let me reason about every disk carefully.")  # the padding comes first
        assert hanoi.parse(text, 7)[0] in hanoi.legal_moves(hanoi.initial_state(7))


@pytest.mark.parametrize("name", NAMES)
def test_padding_keeps_every_oracles_answer_readable(name: str) -> None:
    spec, prompt = case(name)
    exact = SimModel(SimConfig(profile="haiku-4.5", error_rate=0.0, malformed_rate=0.0, seed=3))
    right = parse(spec, exact.answer(prompt, 0.0, None).text)
    for _ in range(10):
        answer = exact.answer(prompt, 0.1, None)
        assert answer.output_tokens > 300
        assert parse(spec, answer.text) == right


# --- difficulty, length, latency ------------------------------------------------------------------------


def test_a_few_steps_are_much_harder_and_the_mean_holds() -> None:
    model = SimModel(SimConfig(profile="gpt-oss-20b", seed=5))
    multipliers = [model.difficulty(f"step {i}") for i in range(20_000)]
    assert statistics.mean(multipliers) == pytest.approx(1.0, abs=0.03)
    assert sum(m > 1 for m in multipliers) / len(multipliers) == pytest.approx(0.1, abs=0.01)
    assert min(multipliers) == pytest.approx(0.5) and max(multipliers) > 9.9
    assert model.difficulty("step 1") == model.difficulty("step 1") != SimModel(SimConfig(seed=6)).difficulty("step 1")

    # observed: 200 steps, 40 samples each, unpadded (length plays no part)
    flat = SimModel(SimConfig(profile="gpt-oss-20b", output_tokens=0, malformed_rate=0.0, seed=5))
    steps = PROMPTS[:200]
    rates = {p: sum(not flat.answer(p, 0.1, None).text.endswith(RIGHT[p]) for _ in range(40)) / 40 for p in steps}
    expected = [flat.error_rate(p, 0) for p in steps]
    variance = sum(40 * e * (1 - e) for e in expected)
    assert sum(rates.values()) * 40 == pytest.approx(40 * sum(expected), abs=2.58 * math.sqrt(variance))
    mean = statistics.mean(rates.values())
    assert mean == pytest.approx(0.0358, rel=0.5)  # 200 steps' difficulties average near 1
    hard = [rate for p, rate in rates.items() if flat.difficulty(p) > 1]
    easy = [rate for p, rate in rates.items() if flat.difficulty(p) < 1]
    assert max(rates.values()) > 5 * 0.0358  # some steps need many more rounds
    assert statistics.mean(hard) > 4 * statistics.mean(easy)


def test_long_answers_are_wrong_more_often_than_short_ones() -> None:
    model = SimModel(SimConfig(profile="haiku-4.5", hard_step_share=0.0, malformed_rate=0.0, seed=7))
    assert model.error_rate("any", 400) == model.error_rate("any", 700) < model.error_rate("any", 800)
    answers = [(prompt, model.answer(prompt, 0.1, None)) for prompt in PROMPTS]

    def error_rate(selected: list[tuple[str, Answer]]) -> float:
        return sum(not a.text.endswith(RIGHT[p]) for p, a in selected) / len(selected)

    short = [(p, a) for p, a in answers if a.output_tokens <= 600]
    long = [(p, a) for p, a in answers if a.output_tokens > 700]
    assert len(long) > 300
    assert error_rate(long) > 1.4 * error_rate(short)


def test_latency_has_a_floor_and_a_long_tail_and_scales() -> None:
    def draws(**given: float) -> list[float]:
        model = SimModel(SimConfig(profile="gpt-4.1-mini", seed=8, **given))
        return [model.latency_s() for _ in range(5000)]

    seconds = draws()
    cfg = SimConfig(profile="gpt-4.1-mini")
    floor, tail = cfg.latency_floor_ms / 1000, cfg.latency_ms / 1000
    assert min(seconds) >= floor > 0
    assert statistics.mean(seconds) == pytest.approx(floor + tail, rel=0.04)
    ranked = sorted(seconds)
    assert ranked[4950] > 2.5 * ranked[2500]  # the 99th percentile: a long tail
    assert draws(latency_scale=0.01) == pytest.approx([s * 0.01 for s in seconds])
    assert all(s == 0 for s in draws(latency_scale=0.0))


# --- end to end -----------------------------------------------------------------------------------------


def test_maker_hanoi_solves_5_disks_on_a_profile_with_zero_errors() -> None:
    result = run_cli(
        "hanoi", "--disks", "5", "--sim-profile", "gpt-4.1-mini", "--sim-latency-scale", "0.01", "--json", timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["solved"] and report["errors"] == 0 and report["steps"] == 31
    assert report["output_tokens"] / report["samples"] > 400  # the profile's long answers, not the bare ones
