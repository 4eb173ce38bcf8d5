"""What Anthropic prompt caching saves on a run: the same spec run with the cache mark on (the default) and off
(--no-prompt-cache), through the anthropic adapter, priced alike, each run's cost and the ratio printed.

    .venv/bin/python benchmarks/prompt_cache.py                   # llama.cpp's server with SmolLM2-135M, here
    .venv/bin/python benchmarks/prompt_cache.py --steps 6 --json
    ANTHROPIC_API_KEY=... .venv/bin/python benchmarks/prompt_cache.py --base-url https://api.anthropic.com/v1 \\
        --model claude-haiku-4-5 --price-in 1 --price-out 5 --price-cached 0.1

The spec sends one long system prompt (a reference list of capitals, over the adapter's cache threshold)
with every sample, and a short question that changes each step: the shape of a MAKER run. Each run's cost is what
the workers priced from the usage the server reported (fresh input, cache reads at --price-cached, cache writes at
1.25 x --price-in, output); beside it, the same tokens priced as if nothing had been cached.

llama.cpp's server takes the cache mark and ignores it: it caches every prompt on its own (its slots keep their
KV cache) and reports the reads, never a write. So there the two runs cost alike, and the saving shown is its own
cache's, against the uncached price (a first run, not counted, warms every slot, so both runs meet its cache
alike). Against Anthropic the mark is what turns caching on. A measurement: exit 0 whatever the runs decide, 2 on
bad flags.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from maker_workers.providers.anthropic import API_VERSION, EPHEMERAL
from orchestrator import api
from orchestrator.cluster.connect import ClusterOptions
from orchestrator.cluster.local_models import LocalModel
from orchestrator.cluster.model_options import ModelOptions

COUNTRIES = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Greece", "Athens"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Ireland", "Dublin"), ("Hungary", "Budapest"),
    ("Czechia", "Prague"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"), ("Ukraine", "Kyiv"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Ghana", "Accra"),
    ("Peru", "Lima"), ("Chile", "Santiago"), ("Cuba", "Havana"), ("Japan", "Tokyo"), ("China", "Beijing"),
    ("Thailand", "Bangkok"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Russia", "Moscow"), ("Mexico", "Mexico"),
    ("Canada", "Ottawa"), ("Belgium", "Brussels"), ("Latvia", "Riga"), ("Estonia", "Tallinn"),
    ("Lithuania", "Vilnius"), ("Slovakia", "Bratislava"), ("Slovenia", "Ljubljana"), ("Albania", "Tirana"),
    ("Iceland", "Reykjavik"), ("Morocco", "Rabat"), ("Tunisia", "Tunis"), ("Senegal", "Dakar"), ("Nepal", "Kathmandu"),
    ("Qatar", "Doha"), ("Oman", "Muscat"), ("Yemen", "Sanaa"), ("Jordan", "Amman"), ("Syria", "Damascus"),
    ("Lebanon", "Beirut"), ("Cyprus", "Nicosia"), ("Malta", "Valletta"), ("Mongolia", "Ulaanbaatar"),
    ("Vietnam", "Hanoi"), ("Laos", "Vientiane"), ("Cambodia", "Phnom"), ("Philippines", "Manila"),
    ("Indonesia", "Jakarta"), ("Malaysia", "Kuala"), ("Argentina", "Buenos"), ("Colombia", "Bogota"),
    ("Venezuela", "Caracas"), ("Ecuador", "Quito"), ("Bolivia", "Sucre"), ("Uruguay", "Montevideo"),
    ("Paraguay", "Asuncion"), ("Jamaica", "Kingston"), ("Haiti", "Port"), ("Panama", "Panama"),
    ("Nicaragua", "Managua"), ("Honduras", "Tegucigalpa"), ("Guatemala", "Guatemala"), ("Ethiopia", "Addis"),
    ("Sudan", "Khartoum"), ("Nigeria", "Abuja"), ("Angola", "Luanda"), ("Zambia", "Lusaka"), ("Uganda", "Kampala"),
    ("Rwanda", "Kigali"), ("Somalia", "Mogadishu"), ("Libya", "Tripoli"), ("Algeria", "Algiers"), ("Mali", "Bamako"),
    ("Niger", "Niamey"), ("Chad", "Ndjamena"), ("Gabon", "Libreville"), ("Namibia", "Windhoek"),
    ("Botswana", "Gaborone"), ("Zimbabwe", "Harare"), ("Mozambique", "Maputo"), ("Madagascar", "Antananarivo"),
    ("Australia", "Canberra"), ("Fiji", "Suva"), ("Samoa", "Apia"), ("Tonga", "Nukualofa"),
]  # fmt: skip
ASKED = ["Germany", "Italy", "Spain", "France", "Japan", "Egypt", "Peru", "Norway", "Greece", "Poland"]


def reference(copies: int = 1) -> str:
    """The long system prompt: instructions and a reference table the model looks its answer up in, `copies` times
    over (once is 3,744 characters: 1,248 tokens by the adapter's estimate, about 1,000 of Claude's)."""
    lines = "\n".join(f"- The capital of {country} is {city}." for country, city in COUNTRIES)
    return (
        "You answer questions about capital cities. Look the country up in the reference list below, write one "
        "short sentence of reasoning, then a last line CITY: <name>, with the first word of the capital's name.\n"
        f"Reference list of capitals:\n{lines}\n"
    ) * copies


def spec(steps: int, copies: int) -> dict[str, Any]:
    """The capitals of `steps` countries, one a step."""
    return {
        "name": "capitals_by_reference",
        "initial_state": {"countries": (ASKED * (1 + steps // len(ASKED)))[:steps], "i": 0, "capitals": []},
        "system": reference(copies),
        "examples": [
            {"user": "What is the capital of Chile?", "assistant": "Chile's capital is Santiago.\nCITY: Santiago"}
        ],
        "prompt": "What is the capital of {{ state.countries[state.i] }}?",
        # The tiny local model often answers in a sentence of its own: that counts too.
        "answer": {"format": "regex", "pattern": r"(?:CITY:|capital of [A-Za-z]+ is) (?P<city>[A-Z][a-z]+)"},
        "next_state": '{"countries": {{ state.countries | tojson }}, "i": {{ state.i + 1 }}, '
        '"capitals": {{ (state.capitals + [answer.city]) | tojson }}}',
        "done": {"steps": steps},
        "k": 2,
        "max_output_tokens": 40,
        "max_samples": 40,
    }


def probe(base_url: str, model: str, key: str | None, copies: int, at_once: int) -> dict[str, Any]:
    """Whether the server takes a system prompt marked for the cache, and what its usage says of it: `at_once`
    requests together, so every slot of a local server holds the prompt before the runs (which then meet its cache
    alike, whichever goes first); the first reply's figures."""
    body = {
        "model": model,
        "max_tokens": 8,
        "system": [{"type": "text", "text": reference(copies), "cache_control": EPHEMERAL}],
        "messages": [{"role": "user", "content": "What is the capital of Peru?"}],
    }
    headers = {"anthropic-version": API_VERSION} | ({"x-api-key": key} if key else {})

    def ask(_: int) -> httpx.Response:
        return httpx.post(base_url.rstrip("/") + "/messages", json=body, headers=headers, timeout=300)

    with ThreadPoolExecutor(at_once) as pool:
        reply, *_ = pool.map(ask, range(at_once))
    usage = reply.json().get("usage", {}) if reply.status_code == 200 else {}
    return {"status": reply.status_code, "usage": usage}


def figures(name: str, report: Any, price: tuple[float, float, float]) -> dict[str, Any]:
    """One run's tokens and costs: as priced by the workers, and the same tokens with no cache at all."""
    price_in, price_out, _ = price
    uncached = (report.input_tokens * price_in + report.output_tokens * price_out) / 1e6
    return {
        "run": name,
        "done": report.done,
        "failure": report.failure,
        "steps": report.steps,
        "samples": report.samples,
        "input_tokens": report.input_tokens,
        "cached_input_tokens": report.cached_input_tokens,
        "cache_write_input_tokens": report.cache_write_input_tokens,
        "output_tokens": report.output_tokens,
        "cost_usd": report.cost_usd,
        "cost_per_sample_usd": report.cost_usd / report.samples if report.cost_usd and report.samples else None,
        "uncached_cost_usd": round(uncached, 9),
    }


@contextlib.contextmanager
def server(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """The server's base URL and model: the one given, or llama.cpp's with the bundled model."""
    if args.base_url:
        yield args.base_url, args.model
        return
    with LocalModel(parallel=args.parallel) as local:
        yield local.base_url, local.model


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/prompt_cache.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="steps of each run (countries asked) [10]")
    parser.add_argument("--base-url", help="a server speaking Anthropic's Messages API [llama.cpp's, started here]")
    parser.add_argument("--model", default="claude-haiku-4-5", help="the model, with --base-url")
    parser.add_argument("--price-in", type=float, default=3.0, help="$ per million input tokens [3, Sonnet 4.5's]")
    parser.add_argument("--price-out", type=float, default=15.0, help="$ per million output tokens [15]")
    parser.add_argument("--price-cached", type=float, default=0.3, help="$ per million cached input tokens [0.3]")
    parser.add_argument(
        "--copies",
        type=int,
        default=1,
        help="copies of the reference in the system prompt: 2 or more against Anthropic, whose minimum is 1,024 "
        "tokens (Haiku 4.5: 4,096) [1]",
    )
    parser.add_argument("--parallel", type=int, default=4, help="the local server's slots [4]")
    parser.add_argument("--json", action="store_true", help="one JSON line of the figures on stdout")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.copies < 1:
        parser.error("--steps and --copies must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    price = (args.price_in, args.price_out, args.price_cached)

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    with server(args) as (base_url, model):
        key = os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("MAKER_API_KEY")
        checked = probe(base_url, model, key, args.copies, args.parallel)
        say(f"# {args.steps} steps on {model} at {base_url}; $ a million tokens in/out/cached: {price}")
        say(f"a marked system prompt: HTTP {checked['status']}, usage {json.dumps(checked['usage'])}")
        runs = []
        # On the local server a first run, not counted, leaves every prompt of the task in its cache, so the two runs
        # after it meet that cache alike (else the second would find the first's questions there). Not on Anthropic:
        # there the mark-on run would read what the warm-up wrote, and its writes would go uncounted.
        order = [("cache mark off", False), ("cache mark on", None)]
        for name, cache in [("warm-up", None), *order] if args.base_url is None else order:
            models = ModelOptions(
                provider="anthropic",
                model=model,
                base_url=base_url,
                price_in=price[0],
                price_out=price[1],
                price_cached=price[2],
                prompt_cache=cache,
            )
            cluster = ClusterOptions(models=models, workers=2, concurrency=max(1, args.parallel // 2))
            report = api.run_spec(spec(args.steps, args.copies), cluster=cluster)
            row = figures(name, report, price)
            if name == "warm-up":
                continue
            runs.append(row)
            say(
                f"{name}: {row['samples']} samples, input {row['input_tokens']} tokens (cached "
                f"{row['cached_input_tokens']}, written {row['cache_write_input_tokens']}), output "
                f"{row['output_tokens']}: ${row['cost_usd']:.6f} (${row['uncached_cost_usd']:.6f} uncached)"
                + ("" if row["done"] else f"; NOT done: {row['failure']}")
            )
    off, on = runs
    per_sample = on["cost_per_sample_usd"] / off["cost_per_sample_usd"] if off["cost_per_sample_usd"] else None
    saving = on["cost_usd"] / on["uncached_cost_usd"] if on["uncached_cost_usd"] else None
    say(f"cost a sample, mark on / mark off: {per_sample:.3f}" if per_sample else "no cost to compare")
    say(f"mark on, as priced / with no cache at all: {saving:.3f}" if saving else "no uncached cost")
    if args.json:
        print(json.dumps({"model": model, "price": price, "probe": checked, "runs": runs, "on_over_off": per_sample,
                          "on_over_uncached": saving}))  # fmt: skip


if __name__ == "__main__":
    main()
