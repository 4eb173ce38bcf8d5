"""On a real model: calibrate, plan, then run examples/copy_letters.yaml with MAKER's k and with one sample a step.

    .venv/bin/python benchmarks/real_model.py                      # the bundled SmolLM2-135M, 30 steps
    .venv/bin/python benchmarks/real_model.py --steps 100 --json
    .venv/bin/python benchmarks/real_model.py --base-url http://host:8080/v1 --model NAME   # any OpenAI-style server

The sim's errors are independent by construction; a real model's are not (some inputs fail every time, samples
repeat each other). This measures what MAKER does about that on a model that runs here: the tiny model copies five
letters right about 80% of the time at T=1 (benchmarks/smollm2_findings.md), a step whose right answer is known
(its input's letters), so every committed step can be scored without trusting the run's own figures. Those figures
(reliability, p_estimate, copy_share) are printed next to the scored ones, to show how far the tool's claims hold.

Calibration walks the right chain itself (the reference trace), draws samples on its steps, and the plan picks k from
that p and its spread across steps; when no k reaches the target it says so and falls back to --k. A measurement, so
the exit is 0 whatever the errors; 2 on bad flags.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from maker_workers.domains.spec import SpecTask, load_spec
from maker_workers.errors import ConfigError
from orchestrator import api
from orchestrator.cluster.connect import ClusterOptions
from orchestrator.cluster.local_models import LocalModel
from orchestrator.cluster.model_options import ModelOptions
from orchestrator.engine.runner import CommittedStep, VotingConfig
from orchestrator.planning.calibrate import Calibration, calibrate, draw_trace_steps, read_trace
from orchestrator.planning.plan import plan, spread_of
from orchestrator.reports.report import TaskReport

SPEC = Path(__file__).resolve().parent.parent / "examples" / "copy_letters.yaml"
FALLBACK_K = 3


def task_of(steps: int, variants: bool = True) -> SpecTask:
    """copy_letters with `done.steps` set to `steps` (and without its prompt variants, if asked), checked as any
    spec is."""
    data = load_spec(SPEC).model_dump(by_alias=True, exclude_none=True) | {"done": {"steps": steps}}
    if not variants:
        data.pop("prompt_variants", None)
    return api.spec_task(data)


def levers(args: argparse.Namespace, cluster: ClusterOptions, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Calibrations at each later temperature, with and without prompt variants, on the same drawn steps."""
    rows = []
    for variants in (False, True):
        task = task_of(args.steps, variants)
        reference, _ = reference_trace(task, args.steps)
        for later in (0.1, 0.7, 1.0):
            drawn = draw_trace_steps(task, reference, -(-args.calibration_samples // 4), random.Random(args.seed))
            voting = api.voting_for(task.spec, later_temperature=later)
            cal = calibrate(task, drawn, steps=args.steps, cluster=cluster, per_step=4, voting=voting)
            rows.append({"later_temperature": later, "prompt_variants": variants} | calibration_figures(cal))
            say(f"later T={later} variants={variants}: {rows[-1]}")
    say("\n| later T | prompt variants | p | correlation | wrong-mode steps | identical texts | wrong collide |")
    say("|---|---|---|---|---|---|---|")
    for row in rows:
        say(
            f"| {row['later_temperature']} | {'yes' if row['prompt_variants'] else 'no'} | {cell(row['p'])} | "
            f"{cell(row['correlation'])} | {row['wrong_mode_steps']} of {row['spread_steps']} | "
            f"{cell(row['identical_share'])} | {cell(row['wrong_collisions'])} |"
        )
    return rows


def reference_trace(task: SpecTask, steps: int) -> tuple[list[dict[str, Any]], Any]:
    """The right chain, walked here: each step's right answer is its input's letters. Written as a run's trace and
    read back, so calibration takes it exactly as it would a reference run's --trace file; and its final state."""
    state, previous, lines = task.initial_state(), None, []
    for step in range(steps):
        answer = {"letters": state["letters"]}
        lines.append({"step": step, "state": state, "answer": answer})
        state, previous = task.next_state(state, step, previous, answer), answer
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reference.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return read_trace(path), state


def letters_of(vote_key: str | None) -> str | None:
    """The letters a vote key (canonical JSON of the parsed answer) holds."""
    try:
        return json.loads(vote_key or "")["letters"]
    except (ValueError, KeyError, TypeError):
        return None


def wrong_collisions(steps: list[CommittedStep]) -> tuple[int, int]:
    """(wrong votes, those equal to another wrong vote of their step): identical mistakes are what ahead-by-k voting
    cannot outvote, so their share says how far the independence the formulas assume holds."""
    wrong = collided = 0
    for step in steps:
        mistakes = Counter(
            s.answer for s in step.said or [] if s.verdict == "vote" and letters_of(s.answer) != step.state["letters"]
        )
        wrong += mistakes.total()
        collided += sum(n for n in mistakes.values() if n > 1)
    return wrong, collided


def calibration_figures(cal: Calibration) -> dict[str, Any]:
    at = cal.spread
    return {
        "samples": cal.samples,
        "answered": cal.answered,
        "votes": cal.votes,
        "p": cal.p,
        "p_low": cal.p_low,
        "p_high": cal.p_high,
        "valid_rate": cal.valid_rate,
        "red_flags": cal.red_flags_by_reason,
        "temperatures": cal.temperatures,
        "spread_steps": at.steps if at else None,
        "correlation": at.correlation if at else None,
        "wrong_mode_steps": at.wrong_mode_steps if at else None,
        "hard_steps": at.hard_steps if at else None,
        "copy_share": at.copy_share if at else None,
        "identical_share": at.identical_share if at else None,
        "wrong_collisions": at.wrong_collisions if at else None,
        "beta": spread_of(cal),
        "wall_s": round(cal.wall_s, 1),
    }


def run_figures(
    name: str, report: TaskReport, steps: list[CommittedStep], total: int, right_end: Any
) -> dict[str, Any]:
    """The run scored against the truth, beside what the run itself claimed."""
    errors = [s.step for s in steps if not isinstance(s.answer, dict) or s.answer.get("letters") != s.state["letters"]]
    wrong, collided = wrong_collisions(steps)
    done = len(steps)
    return {
        "run": name,
        "k": report.k,
        "steps_done": done,
        "steps": total,
        "failure": report.failure,
        "errors": len(errors),
        "error_steps": errors,
        "all_right": done == total and not errors and report.failure is None,
        "final_state_right": report.final_state == right_end,
        "samples": report.samples,
        "samples_per_step": round(report.samples / done, 3) if done else None,
        "votes": report.votes,
        "red_flags": report.red_flags,
        "red_flags_by_reason": report.red_flags_by_reason,
        "input_tokens": report.input_tokens,
        "cached_input_tokens": report.cached_input_tokens,
        "output_tokens": report.output_tokens,
        "wall_s": report.wall_s,
        "claimed_reliability": report.reliability,
        "claimed_p": report.p_estimate,
        "claimed_copy_share": report.copy_share,
        "wrong_votes": wrong,
        "wrong_votes_colliding": collided,
        "wrong_collision_share": round(collided / wrong, 4) if wrong else None,
    }


def run(
    name: str, task: SpecTask, voting: VotingConfig, cluster: ClusterOptions, right_end: Any, say: Callable[[str], None]
) -> dict[str, Any]:
    """One run of the task, each committed step's samples kept (trace_samples) to score its votes."""
    steps: list[CommittedStep] = []

    def on_step(step: CommittedStep) -> None:
        steps.append(step)
        got = step.answer.get("letters") if isinstance(step.answer, dict) else step.answer
        mark = "ok" if got == step.state["letters"] else "WRONG"
        print(
            f"  {name} step {step.step}: {step.state['letters']} -> {got} {mark} ({step.votes} votes)", file=sys.stderr
        )

    hooks = api.Hooks(on_step=on_step, on_warning=lambda text: print(f"  {name} warning: {text}", file=sys.stderr))
    temperatures = (voting.first_temperature, voting.later_temperature)
    say(f"\n## Run: {name} (k={voting.k}, T={temperatures})")
    report = api.run_spec(task.spec, voting=voting, cluster=cluster, hooks=hooks)
    figures = run_figures(name, report, steps, task.total_steps() or 0, right_end) | {"temperatures": temperatures}
    claimed = ", ".join(f"{n}={figures[f'claimed_{n}']}" for n in ("reliability", "p", "copy_share"))
    collisions = figures["wrong_collision_share"]
    lines = [
        f"steps done {figures['steps_done']}/{figures['steps']}"
        + (f"; FAILED: {report.failure}" if report.failure else ""),
        f"errors (wrong committed steps) {figures['errors']} at {figures['error_steps']}; "
        f"all right: {figures['all_right']}; final state equals the right chain's: {figures['final_state_right']}",
        f"samples {figures['samples']} ({figures['samples_per_step']} a step), votes {figures['votes']}, "
        f"red flags {figures['red_flags']} {figures['red_flags_by_reason']}",
        f"tokens: input {figures['input_tokens']} (cached {figures['cached_input_tokens']}), "
        f"output {figures['output_tokens']}; wall {figures['wall_s']} s",
        f"the tool claimed: {claimed}",
        f"wrong votes {figures['wrong_votes']}, colliding with another wrong vote of their step "
        f"{figures['wrong_votes_colliding']} ({'-' if collisions is None else f'{collisions:.1%}'})",
    ]
    for line in lines:
        say(line)
    return figures


def cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "-" if value is None else str(value)


def table(runs: list[dict[str, Any]]) -> list[str]:
    rows = [
        ("k", "k"),
        ("temperatures", "temperatures"),
        ("steps done", "steps_done"),
        ("errors", "errors"),
        ("all right", "all_right"),
        ("samples / step", "samples_per_step"),
        ("votes", "votes"),
        ("red flags", "red_flags"),
        ("input tokens (cached)", None),
        ("output tokens", "output_tokens"),
        ("wall s", "wall_s"),
        ("claimed reliability", "claimed_reliability"),
        ("claimed p", "claimed_p"),
        ("claimed copy share", "claimed_copy_share"),
        ("wrong votes colliding", "wrong_collision_share"),
        ("failure", "failure"),
    ]
    out = ["| | " + " | ".join(r["run"] for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for label, key in rows:
        cells = [f"{r['input_tokens']} ({r['cached_input_tokens']})" if key is None else cell(r[key]) for r in runs]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps of the chain (the spec's done.steps)")
    parser.add_argument("--target", type=float, default=0.9, help="reliability the plan picks k for")
    parser.add_argument("--k", type=int, default=None, help=f"force k (else the plan's; {FALLBACK_K} if none reaches)")
    parser.add_argument("--calibration-samples", type=int, default=120, help="4 a step, on distinct steps")
    parser.add_argument("--base-url", default=None, help="an OpenAI-style server instead of the bundled model")
    parser.add_argument("--model", default=None, help="the model name at --base-url")
    parser.add_argument("--parallel", type=int, default=4, help="the bundled server's slots, and samples in flight")
    parser.add_argument(
        "--single-temperature",
        type=float,
        default=None,
        help="the one-sample-a-step run's temperature [both the spec's first and its later one]",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration's choice of steps")
    parser.add_argument(
        "--levers",
        action="store_true",
        help="instead of the runs: calibrate at later temperatures 0.1, 0.7 and 1.0, with and without the spec's "
        "prompt variants, and print how p, its spread and the copies move (the levers against correlation)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (the rest goes to stderr)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.calibration_samples < 1 or args.parallel < 1 or (args.k is not None and args.k < 1):
        parser.error("--steps, --calibration-samples, --parallel and --k must be at least 1")
    if not 0 < args.target < 1:
        parser.error("--target must be between 0 and 1")
    if (args.base_url is None) != (args.model is None):
        parser.error("--base-url and --model go together")
    return args


@contextlib.contextmanager
def model(args: argparse.Namespace) -> Iterator[ModelOptions]:
    """The given server, or the bundled one for the duration. An API key, if any, the workers read from the
    environment (OPENAI_API_KEY or MAKER_API_KEY)."""
    if args.base_url is not None:
        yield ModelOptions(provider="openai", model=args.model, base_url=args.base_url)
        return
    with LocalModel(parallel=args.parallel) as local:
        yield ModelOptions(provider="openai", model=local.model, base_url=local.base_url)


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    task = task_of(args.steps)
    reference, right_end = reference_trace(task, args.steps)
    with model(args) as models:
        # Samples in flight match the server's slots: more would only queue there and look like slow samples.
        cluster = ClusterOptions(models=models, workers=2, concurrency=max(1, args.parallel // 2))
        say(f"# copy_letters, {args.steps} steps, on {models.model} at {models.base_url}")
        if args.levers:
            rows = levers(args, cluster, say)
            if args.json:
                print(json.dumps({"steps": args.steps, "model": models.model, "levers": rows}))
            return
        wanted = -(-args.calibration_samples // 4)
        drawn = draw_trace_steps(task, reference, wanted, random.Random(args.seed))
        cal = calibrate(task, drawn, steps=args.steps, cluster=cluster, per_step=4, voting=api.voting_for(task.spec))
        calib = calibration_figures(cal)
        say(f"\n## Calibration: {cal.samples} samples, 4 a step on {wanted} steps, T={cal.temperatures}")
        if cal.p is None:
            say(f"no valid answer among {cal.answered} (red flags {cal.red_flags_by_reason})")
        else:
            say(f"p = {cal.p:.4f} (95% interval {cal.p_low:.4f}-{cal.p_high:.4f}); valid rate {cal.valid_rate:.4f}")
        say(
            f"spread: correlation {calib['correlation']}, wrong-mode steps {calib['wrong_mode_steps']} of "
            f"{calib['spread_steps']}, hard steps {calib['hard_steps']}, copy share {calib['copy_share']}, "
            f"wrong collisions {calib['wrong_collisions']}, Beta {calib['beta']}"
        )

        planned: dict[str, Any] = {"target": args.target}
        try:
            if cal.p is None or cal.valid_rate is None:
                raise ConfigError("the calibration found no valid answer, so no p to plan from")
            chosen = plan(cal.p, args.steps, args.target, valid_rate=cal.valid_rate, spread=spread_of(cal))
            planned |= {
                "k": chosen.k_min,
                "p_full": chosen.p_full,
                "samples_per_step": chosen.expected_samples_per_step,
            }
            say(
                f"\n## Plan: k={chosen.k_min} for reliability {args.target} over {args.steps} steps "
                f"(planned p_full {chosen.p_full:.4f}, {chosen.expected_samples_per_step:.2f} samples a step)"
            )
        except ConfigError as exc:
            planned |= {"k": None, "unreachable": str(exc)}
            say(f"\n## Plan: {exc}")
        k = args.k if args.k is not None else planned["k"]
        if args.k is not None:
            say(f"k={k}: forced by --k")
        elif k is None:
            k = FALLBACK_K
            say(f"no planned k: the MAKER run falls back to k={k}")
        planned["k_used"] = k

        maker = api.voting_for(task.spec, k=k, trace_samples=True)
        runs = [run("maker", task, maker, cluster, right_end, say)]
        # One sample a step, twice: at the first temperature (greedy, T=0: the model's best single guess) and at the
        # later one (what each of MAKER's later votes is), or at --single-temperature alone.
        later = maker.later_temperature
        for temperature in [args.single_temperature] if args.single_temperature is not None else [None, later]:
            single = api.voting_for(task.spec, k=1, trace_samples=True, first_temperature=temperature)
            name = f"k=1 T={single.first_temperature:g}"
            runs.append(run(name, task, single, cluster, right_end, say))
    say("\n## Comparison\n")
    for line in table(runs):
        say(line)
    if args.json:
        print(
            json.dumps(
                {"steps": args.steps, "model": models.model, "calibration": calib, "plan": planned, "runs": runs}
            )
        )


if __name__ == "__main__":
    main()
