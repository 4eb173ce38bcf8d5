"""What speculation costs in samples and buys in time, on a free and on a priced model.

    .venv/bin/python benchmarks/speculation_cost.py                 # 6 disks, k=3, 5% wrong, 1 s latency, 3 runs each
    .venv/bin/python benchmarks/speculation_cost.py --runs 5 --json

Each row runs `maker hanoi` as a user does (its own embedded cluster, the simulated LLM), the same seeds in every
row: the default on the sim as it comes (free: speculation is not held back), the default on the sim given a price
(the waste budget holds what speculation and hedging waste to --max-waste, 5% by default), the same with the budget
lifted (--max-waste 1: what a paid model cost before the budget), and sequential voting (--speculate 0). Figures are
means over the runs, with the range: samples a step, the share of samples wasted (`wasted_samples / samples`, from
the report), `wall_s` (until the last commit) and the command's own time (cluster start-up and drain included).

Measured on a 2-core machine (defaults, 3 runs; then `--disks 8 --runs 1`):

                        6 disks: samples/step  wasted   wall_s     8 disks: samples/step  wasted  wall_s
    default, free model          3.69 (3.33-3.98)  10.3% (2.4-16.3%)  26.7       3.69   10.1%   128
    default, priced              3.30 (3.29-3.32)   1.0% (0.0-1.9%)   73.3       3.45    3.2%   263
    priced, --max-waste 1        3.71 (3.43-4.16)  10.0% (3.2-19.1%)  24.1       3.98   15.0%   149
    priced, --speculate 0        3.29 (3.24-3.35)   0.0%             131.5       3.34    0.0%   532

The budget is kept at every moment, so a short run spends little of it (6 disks: 1%) and a longer one more (8 disks:
3.2%); the priced default is 1.8-2.0x faster than sequential voting for about 1-3% more samples.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from statistics import mean
from typing import Any

PRICE = ("--price-in", "0.4", "--price-out", "1.6")  # $ per million tokens, as gpt-4.1-mini
ROWS = {
    "default, free model": (),
    "default, priced": PRICE,
    "priced, --max-waste 1": (*PRICE, "--max-waste", "1"),
    "priced, --speculate 0": (*PRICE, "--speculate", "0"),
}


def one_run(args: argparse.Namespace, seed: int, flags: tuple[str, ...]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "orchestrator.interfaces.cli",
        "hanoi",
        "--disks",
        str(args.disks),
        "--k",
        str(args.k),
        "--sim-error-rate",
        str(args.error_rate),
        "--sim-latency-ms",
        str(args.latency_ms),
        "--seed",
        str(seed),
        "--json",
        *flags,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if not done.stdout.strip():
        raise SystemExit(f"{' '.join(command)} printed no report:\n{done.stderr}")
    report = json.loads(done.stdout.splitlines()[-1])
    return {
        "seed": seed,
        "steps": report["steps"],
        "samples": report["samples"],
        "wasted_samples": report["wasted_samples"],
        "samples_per_step": report["samples"] / max(report["steps"], 1),
        "wasted_share": report["wasted_samples"] / max(report["samples"], 1),
        "wall_s": report["wall_s"],
        "command_s": elapsed,
        "cost_usd": report["cost_usd"],
        "solved": report["solved"],
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(name: str) -> dict[str, float]:
        values = [run[name] for run in runs]
        return {"mean": round(mean(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}

    figures = ("samples_per_step", "wasted_share", "wall_s", "command_s")
    return {name: spread(name) for name in figures} | {"solved": sum(run["solved"] for run in runs), "runs": runs}


def table(args: argparse.Namespace, rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"{args.disks} disks, k={args.k}, {args.error_rate:.0%} wrong, {args.latency_ms:.0f} ms mean latency, "
        f"{args.runs} run(s) each (seeds 1..{args.runs}); mean [min-max]",
        f"{'':24} {'samples/step':>20} {'wasted share':>22} {'wall_s':>20} {'command s':>20} {'solved':>7}",
    ]
    for name, row in rows.items():
        cells = []
        for figure, form in (
            ("samples_per_step", "{:.2f}"),
            ("wasted_share", "{:.1%}"),
            ("wall_s", "{:.1f}"),
            ("command_s", "{:.1f}"),
        ):
            at = row[figure]
            cells.append(f"{form.format(at['mean'])} [{form.format(at['min'])}-{form.format(at['max'])}]")
        solved = f"{row['solved']}/{len(row['runs'])}"
        lines.append(f"{name:24} {cells[0]:>20} {cells[1]:>22} {cells[2]:>20} {cells[3]:>20} {solved:>7}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--disks", type=int, default=6)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--error-rate", type=float, default=0.05)
    parser.add_argument("--latency-ms", type=float, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ROWS}
    for seed in range(1, args.runs + 1):  # the rows interleaved: a slower stretch of the machine hits them all
        for name, flags in ROWS.items():
            runs[name].append(one_run(args, seed, flags))
            print(f"seed {seed}, {name}: {json.dumps(runs[name][-1])}", file=sys.stderr, flush=True)
    rows = {name: summary(done) for name, done in runs.items()}
    print(json.dumps(rows) if args.json else table(args, rows))


if __name__ == "__main__":
    main()
