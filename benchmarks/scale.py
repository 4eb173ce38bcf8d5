"""Long Hanoi runs on the embedded default, with what Redis holds at the end.

    .venv/bin/python benchmarks/scale.py --disks 14 --speculate 4

Prints one JSON line: steps, errors, solved, wall_s, steps_per_s, samples, Redis used_memory_mb, keys,
bytes per committed step. Not part of the test run: 14 disks take about 2.5 minutes here, 20 disks hours.
"""

from __future__ import annotations

import argparse
import json
import time

import redis

from maker_workers.celery_app import make_app
from maker_workers.simllm.model import SimConfig
from orchestrator.embedded import Embedded
from orchestrator.report import Scorer
from orchestrator.runner import Runner, VotingConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disks", type=int, default=14)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--speculate", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with Embedded(workers=args.workers, concurrency=args.concurrency, sim=SimConfig(seed=args.seed)) as cluster:
        client = redis.Redis.from_url(cluster.redis_url)
        base = client.info("memory")["used_memory"]
        runner = Runner(
            client,
            make_app(cluster.redis_url),
            VotingConfig(k=args.k, speculate=args.speculate),
            health_check=cluster.check,
        )
        scorer = Scorer(args.disks)
        started = time.perf_counter()
        runner.run(args.disks, scorer.observe)
        wall = time.perf_counter() - started
        used = client.info("memory")["used_memory"] - base
        print(
            json.dumps(
                {
                    "disks": args.disks,
                    "steps": scorer.steps,
                    "errors": scorer.errors,
                    "solved": scorer.solved,
                    "wall_s": round(wall, 1),
                    "steps_per_s": round(scorer.steps / wall, 1),
                    "samples": runner.stats().get("samples", 0),
                    "redis_used_memory_mb": round(used / 1e6, 1),
                    "redis_keys": client.dbsize(),
                    "redis_bytes_per_step": round(used / max(scorer.steps, 1)),
                }
            )
        )


if __name__ == "__main__":
    main()
