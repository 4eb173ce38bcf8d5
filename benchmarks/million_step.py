"""The million-step run: `maker hanoi --disks 20` on the embedded default, watched from outside.

    .venv/bin/python benchmarks/million_step.py                # 20 disks, 1,048,575 steps, k from the formulas
    .venv/bin/python benchmarks/million_step.py --disks 14     # the same in about a minute

Runs exactly the command a user would (its progress bar, with steps/s and the time left, is drawn on this
terminal), with k picked by the formulas for the sim's error rate (`--target-reliability`, `--p`), and samples
every `--every-s` seconds what the orchestrator process and the embedded Redis hold: the orchestrator's resident
memory, and Redis's used memory (INFO) and peak. At the end prints one JSON line: the run's report, the memory
figures, and what the same run would cost on the paper's models (the price table, at each model's calibrated
error rate and mean output tokens from the paper, with the input tokens this run's prompts took).

Not part of the test run: 20 disks take most of an hour here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from maker_workers.pricing import price_of
from orchestrator.planning.plan import plan, sample_cost_usd

# The paper's calibration (per-step error 1-p and mean output tokens at T=0.1, ../shared/MAKER.md), for models the
# price table lists.
PAPER_MODELS = {
    ("openai", "gpt-4.1-mini"): (0.0022, 538),
    ("openai", "gpt-4.1-nano"): (0.3571, 842),
    ("anthropic", "claude-haiku-4-5"): (0.1839, 588),
}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _redis_port(orchestrator: int) -> int | None:
    """The embedded redis-server's port (a child of the orchestrator), from its process title: redis-server
    rewrites its command line to `redis-server 127.0.0.1:PORT`."""
    for child in _children(orchestrator):
        try:
            title = (Path("/proc") / str(child) / "cmdline").read_bytes().decode().replace("\0", " ").split()
        except OSError:
            continue
        if title and title[0].endswith("redis-server") and len(title) > 1 and ":" in title[1]:
            return int(title[1].rsplit(":", 1)[1])
    return None


def _rss_mb(pid: int) -> float | None:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Watcher(threading.Thread):
    """Samples the orchestrator's RSS and Redis's memory until the run ends."""

    def __init__(self, pid: int, every_s: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.rss: list[tuple[float, float]] = []  # (seconds since start, MB)
        self.redis_used: list[tuple[float, float]] = []
        self.redis_peak_mb: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        client: redis.Redis | None = None
        while not self.done.wait(self.every_s):
            at = time.monotonic() - started
            rss = _rss_mb(self.pid)
            if rss is not None:
                self.rss.append((at, rss))
            try:
                if client is None:
                    port = _redis_port(self.pid)
                    client = redis.Redis(port=port, socket_timeout=5) if port else None
                if client is not None:
                    memory = client.info("memory")
                    self.redis_used.append((at, memory["used_memory"] / 1e6))
                    self.redis_peak_mb = memory["used_memory_peak"] / 1e6
            except redis.RedisError:
                client = None  # the run is ending, or Redis is not up yet


def projected_costs(steps: int, input_tokens_per_sample: float, target: float) -> dict[str, dict[str, float]]:
    """The same run on the paper's models: k and samples from the formulas at each model's p, priced per sample."""
    costs = {}
    for (provider, model), (error, tokens_out) in PAPER_MODELS.items():
        price = price_of(provider, model)
        if price is None:
            continue
        per_sample = sample_cost_usd(price.input, price.output, input_tokens_per_sample, tokens_out)
        planned = plan(1 - error, steps, target, valid_rate=0.99, cost_per_sample_usd=per_sample)
        costs[f"{provider}:{model}"] = {
            "p": round(1 - error, 4),
            "k": planned.k_min,
            "samples_per_step": round(planned.expected_samples_per_step, 3),
            "cost_usd": round(planned.projected_cost_usd or 0.0, 2),
        }
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disks", type=int, default=20)
    parser.add_argument("--target-reliability", type=float, default=0.95)
    parser.add_argument("--p", type=float, default=0.99, help="the sim's: 1 - its default error rate")
    parser.add_argument("--every-s", type=float, default=10.0)
    parser.add_argument("--trace", type=Path, default=None, help="also write the run's trace here")
    parser.add_argument("maker_args", nargs="*", help="more `maker hanoi` options, after --")
    args = parser.parse_args()

    command = [sys.executable, "-m", "orchestrator.interfaces.cli", "hanoi", "--disks", str(args.disks), "--json"]
    command += ["--target-reliability", str(args.target_reliability), "--p", str(args.p)]
    command += ["--trace", str(args.trace)] if args.trace else []
    command += args.maker_args
    print(" ".join(["maker", *command[3:]]), file=sys.stderr, flush=True)
    started = time.perf_counter()
    run = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    watcher = Watcher(run.pid, args.every_s)
    watcher.start()
    # Stopping this script stops the run, which shuts its cluster down (a Ctrl-C reaches both already).
    signal.signal(signal.SIGTERM, lambda *_: run.terminate())
    try:
        out, _ = run.communicate()
    except KeyboardInterrupt:
        out, _ = run.communicate()
    watcher.done.set()
    watcher.join()
    elapsed = time.perf_counter() - started
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"maker hanoi printed no report (exit {run.returncode})")
    report = json.loads(lines[-1])
    samples = max(report["samples"], 1)
    settled = [mb for at, mb in watcher.rss if at >= 60] or [mb for _, mb in watcher.rss]
    figures = {
        "disks": args.disks,
        "exit": run.returncode,
        "steps": report["steps"],
        "errors": report["errors"],
        "solved": report["solved"],
        "k": report["k"],
        "wall_s": report["wall_s"],
        "command_s": round(elapsed, 1),
        "steps_per_s": round(report["steps"] / max(report["wall_s"], 1e-9), 1),
        "samples": report["samples"],
        "samples_per_step": round(report["samples"] / max(report["steps"], 1), 4),
        "wasted_samples": report.get("wasted_samples"),
        "max_rounds": report["max_rounds"],
        "red_flags": report["red_flags"],
        "input_tokens": report["input_tokens"],
        "output_tokens": report["output_tokens"],
        "redis_peak_mb": None if watcher.redis_peak_mb is None else round(watcher.redis_peak_mb, 1),
        "redis_used_mb_max": round(max((mb for _, mb in watcher.redis_used), default=0.0), 1),
        "orchestrator_rss_mb_first_after_60s": round(settled[0], 1) if settled else None,
        "orchestrator_rss_mb_last": round(settled[-1], 1) if settled else None,
        "orchestrator_rss_mb_max": round(max(settled), 1) if settled else None,
        "projected_cost_on_paper_models": projected_costs(
            report["steps"], report["input_tokens"] / samples, args.target_reliability
        ),
    }
    print(json.dumps(figures), flush=True)
    raise SystemExit(run.returncode)


if __name__ == "__main__":
    main()
