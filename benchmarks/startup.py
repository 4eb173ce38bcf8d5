"""How long a newcomer's short commands take, start-up included, beside the run's own time.

    .venv/bin/python benchmarks/startup.py                                  # this checkout, 7 rounds
    git worktree add --detach /tmp/maker-base ae5795e                       # a checkout to compare with
    .venv/bin/python benchmarks/startup.py --baseline /tmp/maker-base       # A B A B ..., medians and ratios

Times, as a user sees them (the whole process, from start to exit): `maker --help`, `maker --version`, `maker
vote` and a 5-disk `maker hanoi` on the embedded default (its own Redis, sim and workers, started and stopped by
the command). For the last two also: when the embedded cluster was ready (its "embedded cluster up" line), and
the run's own time (`wall_s` of its --json report), so that what start-up and shut-down cost is the rest. CPU
seconds count the command's children too (the workers): on a busy machine they move less than wall times.

Each command runs as `python -m orchestrator.interfaces.cli` (`orchestrator.cli` in a checkout from before the
layout by role) with PYTHONPATH set to the checkout and its working folder a
new empty one, so that the code timed is that checkout's whatever is installed; the Python environment (the
packages) is this one's. With --baseline the two checkouts take turns, command by command. One round, not
counted, warms the caches first. Prints a table of medians, and one JSON line of them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
READY = "embedded cluster up"
QUESTION = "Compute: (17 * 23) - 4"
COMMANDS: dict[str, list[str]] = {
    "help": ["--help"],
    "version": ["--version"],
    "vote": ["vote", "--prompt", QUESTION, "--format", "json", "--k", "3", "--json"],
    "hanoi": ["hanoi", "--disks", "5", "--json"],
}


def _cpu_of_children() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def cli_module(root: Path) -> str:
    """The CLI's module in checkout `root`: in its room since the layout by role, flat before."""
    return (
        "orchestrator.interfaces.cli" if (root / "orchestrator" / "interfaces" / "cli").exists() else "orchestrator.cli"
    )


def measure(root: Path, name: str, workdir: str) -> dict[str, float]:
    """One run of command `name` from checkout `root`: whole (wall s), cpu (s); for a run also ready and own."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    argv = [sys.executable, "-m", cli_module(root), *COMMANDS[name]]
    cpu, started = _cpu_of_children(), time.perf_counter()
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready: list[float] = []
    said: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            said.append(line)
            if READY in line and not ready:
                ready.append(time.perf_counter() - started)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert proc.stdout is not None
    out = proc.stdout.read()
    code = proc.wait()
    whole = time.perf_counter() - started
    reader.join()
    if code != 0:
        raise SystemExit(f"{name} from {root} exited {code}:\n{''.join(said)[-2000:]}")
    figures = {"whole": whole, "cpu": _cpu_of_children() - cpu}
    if name in ("vote", "hanoi"):
        if not ready:
            raise SystemExit(f"{name} from {root} never said {READY!r}:\n{''.join(said)[-2000:]}")
        figures |= {"ready": ready[0], "own": json.loads(out.splitlines()[-1])["wall_s"]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="counted rounds (each runs every command once)")
    parser.add_argument("--baseline", type=Path, help="another checkout (a git worktree) to time in turn with this")
    args = parser.parse_args()
    roots = {"this": HERE}
    if args.baseline is not None:
        if not (args.baseline / "orchestrator").is_dir():
            raise SystemExit(f"--baseline {args.baseline}: not a checkout of maker (no orchestrator/ folder)")
        roots["baseline"] = args.baseline.resolve()
    runs: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="maker-startup-") as workdir:
        for round_ in range(args.rounds + 1):
            for name in COMMANDS:
                for label, root in roots.items():
                    figures = measure(root, name, workdir)
                    if round_:  # the first warms the caches
                        runs[label, name].append(figures)
            print(f"round {round_}/{args.rounds} done", file=sys.stderr, flush=True)
    medians = {
        label: {
            name: {key: round(statistics.median(r[key] for r in runs[label, name]), 3) for key in runs[label, name][0]}
            for name in COMMANDS
        }
        for label in roots
    }
    print(f"medians of {args.rounds} rounds, seconds ({', '.join(f'{k}: {v}' for k, v in roots.items())})")
    header = f"{'':34}" + "".join(f"{label:>12}" for label in roots)
    print(header + (f"{'ratio':>9}" if len(roots) == 2 else ""))
    rows = [
        ("maker --help", "help", "whole"),
        ("maker --version", "version", "whole"),
        ("vote: embedded cluster ready", "vote", "ready"),
        ("vote: the run's own time", "vote", "own"),
        ("vote: whole command", "vote", "whole"),
        ("vote: CPU, workers included", "vote", "cpu"),
        ("hanoi 5 disks: cluster ready", "hanoi", "ready"),
        ("hanoi 5 disks: the run's own time", "hanoi", "own"),
        ("hanoi 5 disks: whole command", "hanoi", "whole"),
        ("hanoi 5 disks: CPU", "hanoi", "cpu"),
    ]
    for title, name, key in rows:
        values = [medians[label][name][key] for label in roots]
        ratio = f"{values[0] / values[1]:>9.2f}" if len(values) == 2 and values[1] else ""
        print(f"{title:34}" + "".join(f"{v:>12.3f}" for v in values) + ratio)
    print(json.dumps({"rounds": args.rounds, "checkouts": {k: str(v) for k, v in roots.items()}, "medians": medians}))


if __name__ == "__main__":
    main()
