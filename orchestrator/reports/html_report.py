"""`maker report`: one self-contained HTML page (PNG plots inlined as data URIs) of runs' figures.

A run is read from its Redis (the counters, the answer log and the events stream) or from the
`--trace FILE` its `maker hanoi|run` wrote; each source holds some of what the plots need:

    plot                          trace (one line per committed step)   Redis
    votes per step                votes                                 vote events on each committed input
    undecided after each round    rounds                                missing: rounds are the orchestrator's
    red flags by reason           missing: a count per step, no reason  the run's red_flag:<reason> counters
    cost over steps               spent_usd                             cost_usd of the events, to each decision
    k over steps                  k                                     meta config k, then k_changed events
    samples against steps         several runs of different sizes, from either source: c·s·ln s fitted

A plot a source cannot give is a line on the page saying why, never a blank image.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from jinja2 import Environment
from pydantic import BaseModel, ConfigDict, ValidationError

from maker_workers import keys
from maker_workers.domains import hanoi, load_task
from maker_workers.errors import ConfigError, MakerError, store_errors
from maker_workers.pricing import usd
from orchestrator.cluster.connect import connect, redact
from orchestrator.engine.store import RunStore
from orchestrator.reports import plots
from orchestrator.reports.report import RunCounts, cost_usd

SAMPLE_KINDS = {b"vote", b"red_flag", b"error", b"fatal", b"late"}  # one event per sample drawn, with its cost
EVENTS_PAGE = 10_000


@dataclass
class StepPoint:
    """What one committed step shows in the plots."""

    step: int
    votes: int
    rounds: int | None = None
    red_flags: int | None = None
    k: int | None = None
    spent_usd: float | None = None


@dataclass
class RunFigures:
    """One run as a source gives it: the table's figures, the committed steps' points, and for each plot
    the source cannot give, why."""

    label: str
    source: str
    status: str
    steps: int
    samples: int
    votes: int
    red_flags: int | None
    red_flags_by_reason: dict[str, int] | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    k: str | None
    wall_s: float | None
    points: list[StepPoint]
    missing: dict[str, str] = field(default_factory=dict)  # plot -> why this source cannot draw it
    notes: list[str] = field(default_factory=list)
    ended: str | None = None  # how it ended: solved, NOT solved, done, failed, running; None when the source cannot say
    errors: int | None = None  # Hanoi: committed moves that are not the optimal one (scored after commit)
    failure: str | None = None  # why it failed, when it did


class TraceLine(BaseModel):
    """One line of `--trace`; the task's own fields (move, state, answer, ...) pass through unread."""

    model_config = ConfigDict(extra="allow")
    step: int
    samples: int
    votes: int
    rounds: int | None = None
    red_flags: int | None = None
    k: int | None = None
    spent_usd: float | None = None


def from_trace(path: Path) -> RunFigures:
    """A run from its `--trace` file; a file that is not one raises ConfigError naming it and the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--trace {path}: cannot read it ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--trace {path}: not UTF-8 text, so not a trace") from exc
    lines: dict[int, TraceLine] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = TraceLine.model_validate_json(raw)
        except ValidationError as exc:
            raise ConfigError(
                f"--trace {path}: line {number} is not a step of a trace (one JSON object per committed step, "
                f"with step, samples and votes): {exc.errors()[0]['msg']}"
            ) from exc
        lines[line.step] = line  # a resumed run may repeat a step: its last line counts
    if not lines:
        raise ConfigError(f"--trace {path}: holds no step")
    ordered = [lines[step] for step in sorted(lines)]
    last = ordered[-1]
    has = {name: all(name in line.model_fields_set for line in ordered) for name in ("rounds", "red_flags", "k")}
    has_spend = all("spent_usd" in line.model_fields_set for line in ordered)
    by_reason = "a trace counts each step's red flags, not their reasons; the reasons are in the run's Redis"
    missing = {"red_flags_by_reason": f"{by_reason} (maker report RUN_ID --redis-url URL)"}
    older = "this trace has no `{}` (written by a maker before `report`); a new run's --trace has it"
    missing |= {name: older.format(name) for name in ("rounds", "k") if not has[name]}
    if not has_spend:
        missing["cost"] = older.format("spent_usd")
    elif last.spent_usd is None:
        missing["cost"] = "a model's price was unknown, so the run's spend is too (give --price-in/--price-out)"
    ks = sorted({line.k for line in ordered if line.k is not None})
    task = "hanoi" if "move" in (last.model_extra or {}) else "task"
    return RunFigures(
        label=path.name,
        source=f"trace {path} ({task})",
        status=f"committed steps 0–{last.step}" if len(ordered) == last.step + 1 else "some steps missing",
        steps=len(ordered),
        samples=sum(line.samples for line in ordered),
        votes=sum(line.votes for line in ordered),
        red_flags=sum(line.red_flags or 0 for line in ordered) if has["red_flags"] else None,
        red_flags_by_reason=None,
        input_tokens=None,
        output_tokens=None,
        cost_usd=last.spent_usd if has_spend else None,
        k=" → ".join(map(str, ks)) or None,
        wall_s=None,
        points=[
            StepPoint(line.step, line.votes, line.rounds, line.red_flags, line.k, line.spent_usd) for line in ordered
        ],
        missing=missing,
        notes=[
            "From a trace: the counts of the committed steps' contests at commit. Samples spent on speculative "
            "guesses, or landing after a step was decided, are only in the run's Redis and its --json report."
        ],
    )


def from_redis(client: redis.Redis, redis_url: str, run_id: str) -> RunFigures:
    """A run from its Redis; raises MakerError when the Redis holds no such run."""
    store = RunStore(client, run_id)
    if not store.exists():
        raise MakerError(f"no run {run_id} in the Redis at {redact(redis_url)}: check the run id and --redis-url")
    definition = store.task() or {}
    answers = store.answers()
    stats = store.stats()
    finished = store.finished()
    with store_errors(f"reading run {run_id}"):
        raw_config, started, ended = client.hmget(keys.meta(run_id), ["config", "started", "ended"])
    config = json.loads(raw_config or "{}")
    inputs, notes = _committed_inputs(definition, answers)
    events = _read_events(client, run_id)
    points, k_values, trimmed = _points_from_events(events, inputs, config.get("k"), stats)
    if trimmed:
        notes.append(
            f"The events stream keeps the newest ~100,000 entries: {trimmed} of {len(answers)} committed steps "
            "are no longer in it and are left out of the per-step plots."
        )
    cost = cost_usd(stats)
    rounds = "rounds (batches of samples the orchestrator sent) are not kept in Redis; the run's --trace FILE has them"
    missing = {"rounds": rounds}
    if cost is None:
        missing["cost"] = "a model's price is unknown, so the run's spend is too (give the workers its price)"
    wall = None if started is None else (float(ended) if ended else time.time()) - float(started)
    status = "running: the figures so far" if finished is None else (f"failed: {finished}" if finished else "ended")
    ended, errors = _ending(definition, answers, finished)
    return RunFigures(
        ended=ended,
        errors=errors,
        failure=finished or None,
        label=run_id,
        source=f"run {run_id} ({_describe(definition)}) in the Redis at {redact(redis_url)}",
        status=status,
        steps=len(answers),
        samples=stats.get("samples", 0),
        votes=stats.get("votes", 0),
        red_flags=stats.get("red_flags", 0),
        red_flags_by_reason=RunCounts.by_reason(stats),
        input_tokens=stats.get("input_tokens", 0),
        output_tokens=stats.get("output_tokens", 0),
        cost_usd=cost,
        k=" → ".join(map(str, k_values)) or None,
        wall_s=wall,
        points=points,
        missing=missing,
        notes=notes,
    )


def _ending(definition: dict[str, Any], answers: list[Any], finished: str | None) -> tuple[str, int | None]:
    """How a run ended, and (Hanoi) how many of its committed moves are wrong, scored against the optimal ones."""
    errors = None
    solved = True
    if definition.get("kind") == "hanoi":
        disks = int(definition.get("disks", 0))
        optimal = list(hanoi.optimal_moves(disks))
        errors = sum(hanoi.move_of(a) != m for a, m in zip(answers, optimal, strict=False))
        last = answers[-1]["next_state"] if answers else None
        solved = errors == 0 and len(answers) == len(optimal) and last == hanoi.goal_state(disks)
    if finished is None:
        return "running", errors
    if finished:
        return "failed", errors
    if definition.get("kind") == "hanoi":
        return ("solved" if solved else "NOT solved"), errors
    return "done", errors


def _describe(definition: dict[str, Any]) -> str:
    if definition.get("kind") == "hanoi":
        return f"hanoi, {definition.get('disks')} disks"
    return f"{definition.get('kind')} {definition.get('spec', {}).get('name', '')}".strip()


def _committed_inputs(definition: dict[str, Any], answers: list[Any]) -> tuple[list[bytes], list[str]]:
    """The input hash of each committed step, replayed from the answer log: its contest is the one to plot."""
    try:
        task = load_task(definition)
        state, previous, hashes = task.initial_state(), None, []
        for step, answer in enumerate(answers):
            hashes.append(task.input_hash(state, step, previous).encode())
            state, previous = task.next_state(state, step, previous, answer), answer
    except (MakerError, KeyError, TypeError, ValueError) as exc:
        return [], [f"The committed steps could not be replayed ({exc}), so no per-step plot is drawn."]
    return hashes, []


def _read_events(client: redis.Redis, run_id: str) -> list[dict[bytes, bytes]]:
    stream, start, events = keys.events(run_id), "-", []
    while True:
        with store_errors(f"reading the events of run {run_id}"):
            page = client.xrange(stream, min=start, max="+", count=EVENTS_PAGE)
        events.extend(fields for _, fields in page)
        if len(page) < EVENTS_PAGE:
            return events
        ms, seq = page[-1][0].decode().split("-")
        start = f"{ms}-{int(seq) + 1}"


def _points_from_events(
    events: list[dict[bytes, bytes]], inputs: list[bytes], k: int | None, stats: dict[str, int]
) -> tuple[list[StepPoint], list[int], int]:
    """Each committed step's votes, k and the spend when it was committed; the k values in order; and how
    many committed steps the (capped) stream no longer holds."""
    votes: dict[tuple[int, bytes], int] = {}
    decided_at: dict[tuple[int, bytes], int] = {}  # the contest -> the spend (nano-dollars) at its decision
    k_from: list[tuple[int, int]] = [] if k is None else [(0, k)]
    spent = 0
    for fields in events:
        kind = fields.get(b"kind")
        contest = (int(fields.get(b"step", -1)), fields.get(b"input", b""))
        if kind in SAMPLE_KINDS and b"cost_usd" in fields:
            spent += round(float(fields[b"cost_usd"]) * 1e9)
        if kind == b"vote":
            votes[contest] = votes.get(contest, 0) + 1
        elif kind == b"decided":
            decided_at.setdefault(contest, spent)
        elif kind == b"k_changed":
            k_from.append((contest[0], int(fields[b"k"])))
    offset = stats.get("cost_nusd", 0) - spent  # what the events trimmed off the stream's head had cost
    k_from.sort()
    points, missing, at, committed_at = [], 0, 0, 0
    for step, digest in enumerate(inputs):
        while at + 1 < len(k_from) and k_from[at + 1][0] <= step:
            at += 1
        contest = (step, digest)
        if contest not in decided_at:
            missing += 1
            continue
        step_k = k_from[at][1] if k_from else None
        # a step is committed once it and every step before it are decided (a guess may be decided first)
        committed_at = max(committed_at, decided_at[contest])
        points.append(StepPoint(step, votes.get(contest, 0), k=step_k, spent_usd=usd(committed_at + offset)))
    return points, list(dict.fromkeys(k for _, k in k_from)), missing


@dataclass
class Chart:
    title: str
    png: bytes | None = None
    missing: str | None = None
    caption: str | None = None

    @property
    def data_uri(self) -> str:
        assert self.png is not None
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


def run_charts(run: RunFigures) -> list[Chart]:
    """The per-run plots, each drawn or replaced by why this source cannot give it."""
    points, charts, missing = run.points, [], dict(run.missing)
    if points and "rounds" not in missing and max(p.rounds or 0 for p in points) <= 1:
        missing["rounds"] = "every step was decided in its first round"
    if "cost" not in missing and run.cost_usd == 0:
        missing["cost"] = "the run spent $0: its model is priced at nothing (the simulated one is)"

    def chart(title: str, need: str | None, draw: Callable[[], tuple[bytes, str | None]]) -> None:
        if not points:
            charts.append(Chart(title, missing="no committed step with per-step figures in this source"))
        elif need is not None and need in missing:
            charts.append(Chart(title, missing=missing[need]))
        else:
            png, caption = draw()
            charts.append(Chart(title, png=png, caption=caption))

    steps = [p.step for p in points]
    first_k = points[0].k if points else None
    chart("Votes per step", None, lambda: (plots.votes_per_step(steps, [p.votes for p in points], first_k), None))

    def decay() -> tuple[bytes, str]:
        rounds = [p.rounds or 0 for p in points]
        png, ratio = plots.undecided_after_rounds(rounds)
        fit = f"; each round leaves about ×{ratio:.3g} of the steps before it undecided" if ratio else ""
        return png, f"{len(rounds)} steps; the hardest took {max(rounds)} rounds{fit}"

    chart("Undecided steps after each round (log scale)", "rounds", decay)
    charts.append(_red_flags_chart(run))
    chart(
        "Cost over steps",
        "cost",
        lambda: (plots.cost_over_steps(steps, [p.spent_usd or 0.0 for p in points]), None),
    )
    chart("k over steps", "k", lambda: (plots.k_over_steps(steps, [p.k or 0 for p in points]), None))
    return charts


def _red_flags_chart(run: RunFigures) -> Chart:
    title, points = "Red flags by reason", run.points
    if run.red_flags == 0:
        return Chart(title, missing="no sample of this run was red-flagged")
    if run.red_flags_by_reason:
        return Chart(title, png=plots.red_flags_by_reason(run.red_flags_by_reason))
    why = run.missing.get("red_flags_by_reason", "this source does not count red flags by reason")
    if points and all(p.red_flags is not None for p in points):
        png = plots.red_flags_over_steps([p.step for p in points], [p.red_flags or 0 for p in points])
        return Chart("Red flags over steps (not by reason)", png=png, caption=f"By reason: {why}.")
    return Chart(title, missing=why)


def scaling_chart(runs: list[RunFigures]) -> Chart:
    title = "Samples against steps, across runs: Θ(s ln s)"
    sizes = {run.steps for run in runs if run.steps > 1}
    if len(sizes) < 2:
        return Chart(title, missing="needs runs of at least two sizes: give several --trace files or run ids")
    png, c = plots.samples_against_steps([(run.label, run.steps, run.samples) for run in runs])
    return Chart(title, png=png, caption=f"least-squares fit: samples ≈ {c:.3g} · s · ln s")


def _number(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "$":
        return f"${value:,.4f}"
    if unit == "s":
        return f"{value:,.1f} s"
    return f"{value:,}"


def table_rows(runs: list[RunFigures]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(figure, its name in the page, [(shown, raw value)] for each run)."""
    rows: list[tuple[str, str, Any]] = [
        ("ended", "ended", lambda r: r.ended),  # how the run went comes first
        ("errors", "errors", lambda r: r.errors),
        ("failure", "failure", lambda r: r.failure or ("—" if r.ended is None else "none")),
        ("steps", "steps", lambda r: r.steps),
        ("samples", "samples", lambda r: r.samples),
        ("votes", "votes", lambda r: r.votes),
        ("red_flags", "red flags", lambda r: r.red_flags),
        ("input_tokens", "input tokens", lambda r: r.input_tokens),
        ("output_tokens", "output tokens", lambda r: r.output_tokens),
        ("cost_usd", "cost", lambda r: r.cost_usd),
        ("k", "k", lambda r: r.k),
        ("wall_s", "wall", lambda r: None if r.wall_s is None else round(r.wall_s, 3)),
    ]
    units = {"cost_usd": "$", "wall_s": "s"}
    table = []
    for name, shown, get in rows:
        cells = []
        for run in runs:
            value = get(run)
            text = value if isinstance(value, str) else _number(value, units.get(name, ""))
            cells.append((text, "" if value is None else str(value)))
        table.append((name, shown, cells))
    return table


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>maker report: {{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; color: #1f2328; margin: 24px auto; max-width: 1180px; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin: 28px 0 6px; border-bottom: 1px solid #d0d7de; }
.sub { color: #57606a; margin: 0 0 8px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 4px 12px; border-bottom: 1px solid #eaeef2; text-align: right; }
th:first-child, td:first-child { text-align: left; } thead th { background: #f6f8fa; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 18px; align-items: start; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px; background: #fff; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-weight: 600; margin-bottom: 6px; } .caption { color: #57606a; font-size: 13px; margin-top: 4px; }
.missing { color: #6e4c00; background: #fff8c5; border: 1px dashed #d4a72c; border-radius: 4px; padding: 10px; }
.note { color: #57606a; font-size: 13px; }
</style></head><body>
<h1>maker report</h1>
<p class="sub">{{ runs | length }} run{{ "s" if runs | length > 1 else "" }}, made {{ made }}</p>
<ul>{% for run in runs %}<li><b>{{ run.label }}</b>: {{ run.source }}; {{ run.status }}</li>{% endfor %}</ul>
<h2>Figures</h2>
<table id="figures"><thead><tr><th></th>{% for run in runs %}<th>{{ run.label }}</th>{% endfor %}</tr></thead>
<tbody>{% for name, shown, cells in rows %}<tr data-figure="{{ name }}"><td>{{ shown }}</td>
{% for text, raw in cells %}<td data-value="{{ raw }}">{{ text }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
<p class="note">—: not in this source.</p>
{% for note, labels in notes.items() %}<p class="note">{{ labels | join(", ") }}: {{ note }}</p>{% endfor %}
{% macro show(chart) %}<figure><figcaption>{{ chart.title }}</figcaption>
{% if chart.png %}<img alt="{{ chart.title }}" src="{{ chart.data_uri }}">
{% if chart.caption %}<div class="caption">{{ chart.caption }}</div>{% endif %}
{% else %}<div class="missing">Not drawn: {{ chart.missing }}.</div>{% endif %}</figure>{% endmacro %}
{% if runs | length > 1 %}<h2>Across runs</h2><div class="grid">{{ show(scaling) }}</div>{% endif %}
{% for run, charts in per_run %}<h2>{{ run.label }}</h2><p class="sub">{{ run.source }}</p>
<div class="grid">{% for chart in charts %}{{ show(chart) }}{% endfor %}
{% if runs | length == 1 %}{{ show(scaling) }}{% endif %}</div>{% endfor %}
</body></html>
"""


def render(runs: list[RunFigures]) -> str:
    """The page for these runs: the figures table, the cross-run scaling plot, each run's plots."""
    template = Environment(autoescape=True).from_string(PAGE)
    return template.render(
        title=", ".join(run.label for run in runs),
        runs=runs,
        made=time.strftime("%Y-%m-%d %H:%M:%S"),
        rows=table_rows(runs),
        notes={note: [run.label for run in runs if note in run.notes] for run in runs for note in run.notes},
        scaling=scaling_chart(runs),
        per_run=[(run, run_charts(run)) for run in runs],
    )


def write_report(out: Path, run_ids: list[str], traces: list[Path], redis_url: str | None) -> list[RunFigures]:
    """Read every run (run ids from the Redis at `redis_url`), render the page to `out`; returns the runs."""
    if not run_ids and not traces:
        raise ConfigError("nothing to report: give a RUN_ID (with --redis-url) or --trace FILE, or several")
    runs = []
    if run_ids:
        if redis_url is None:
            raise ConfigError(
                "a RUN_ID is read from its Redis: give --redis-url (or MAKER_REDIS_URL); an embedded run's "
                "Redis ended with it, so report it from its --trace FILE"
            )
        client = connect(redis_url)
        try:
            runs.extend(from_redis(client, redis_url, run_id) for run_id in run_ids)
        finally:
            client.close()
    runs.extend(from_trace(path) for path in traces)
    page = render(runs)
    try:
        out.write_text(page)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write it ({exc.strerror})") from exc
    return runs
