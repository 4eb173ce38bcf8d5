"""The charts of `maker report`, drawn with matplotlib's Agg backend into PNG bytes.

Each function takes plain numbers and returns a PNG; deciding whether a source holds the numbers is
`html_report`'s job. Figures are built without pyplot, so no global state is touched.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

SIZE = (5.6, 3.4)  # inches; at DPI, 672 x 408 px, shown at half a page's width
DPI = 120
BLUE, ORANGE, GREY, RED = "#1f6feb", "#d9822b", "#8b949e", "#cf222e"
MAX_POINTS = 4000  # a longer run is drawn per bin of steps: mean and max


def _figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0].tolist()
    for ax in axes:
        ax.grid(True, color="#e6e6e6", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _log_y(ax: Axes) -> None:
    """A log y axis labelled 1, 2, 5, 10, ...: plain counts, never 3×10^0."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _binned(steps: Sequence[int], values: Sequence[float]) -> tuple[list[float], list[float], list[float]]:
    """Bins of consecutive steps: each bin's first step, mean and max."""
    size = math.ceil(len(steps) / (MAX_POINTS // 4))
    xs, means, maxes = [], [], []
    for start in range(0, len(steps), size):
        chunk = values[start : start + size]
        xs.append(steps[start])
        means.append(sum(chunk) / len(chunk))
        maxes.append(max(chunk))
    return xs, means, maxes


def votes_per_step(steps: Sequence[int], votes: Sequence[int], k: int | None) -> bytes:
    """Left: each step's votes against the step; right: how many steps took each number of votes."""
    fig, (along, spread) = _figure(2)
    if len(steps) <= MAX_POINTS:
        along.plot(steps, votes, ".", color=BLUE, markersize=3 if len(steps) < 500 else 1.5)
    else:
        xs, means, maxes = _binned(steps, votes)
        along.plot(xs, maxes, color=ORANGE, linewidth=0.8, label="max in bin")
        along.plot(xs, means, color=BLUE, linewidth=1, label="mean in bin")
        along.legend(fontsize=7, frameon=False)
    if k is not None:
        along.axhline(k, color=GREY, linestyle="--", linewidth=0.8)
        along.annotate(
            f"k = {k}",
            (0, k),
            xycoords=("axes fraction", "data"),
            xytext=(2, 4),
            textcoords="offset points",
            fontsize=7,
            color="#57606a",
        )
    along.set_xlabel("step", fontsize=8)
    along.set_ylabel("votes", fontsize=8)
    along.yaxis.set_major_locator(MaxNLocator(integer=True))
    counts = Counter(votes)
    spread.bar(list(counts), list(counts.values()), color=BLUE, width=0.8)
    _log_y(spread)
    spread.set_xlabel("votes in the step", fontsize=8)
    spread.set_ylabel("steps", fontsize=8)
    spread.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def undecided_after_rounds(rounds: Sequence[int]) -> tuple[bytes, float | None]:
    """Steps still undecided after round r = 1, 2, ... (those that took more than r rounds), on a log scale,
    with the exponential that fits them; returns the PNG and the share each round keeps undecided (None: no
    fit). Needs a step that took two rounds or more."""
    fig, (ax,) = _figure()
    shown = [(r, n) for r in range(1, max(rounds)) if (n := sum(1 for taken in rounds if taken > r))]
    ax.plot([r for r, _ in shown], [n for _, n in shown], "o-", color=BLUE, markersize=4, label="undecided steps")
    ratio = None
    if len(shown) >= 3:  # two points fit any exponential: nothing learnt
        # log n weighed by n: a count of 1 or 2 in the tail (the few hard steps) says little about the rate
        total = sum(n for _, n in shown)
        mean_r = sum(n * r for r, n in shown) / total
        mean_y = sum(n * math.log(n) for _, n in shown) / total
        slope = sum(n * (r - mean_r) * (math.log(n) - mean_y) for r, n in shown) / sum(
            n * (r - mean_r) ** 2 for r, n in shown
        )
        ratio = math.exp(slope)
        line = [math.exp(mean_y + slope * (r - mean_r)) for r, _ in shown]
        ax.plot([r for r, _ in shown], line, "--", color=ORANGE, linewidth=1.2, label=f"fit: × {ratio:.3g} a round")
    _log_y(ax)
    ax.set_xlabel("round r", fontsize=8)
    ax.set_ylabel("steps undecided after round r", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, frameon=False)
    return _png(fig), ratio


def red_flags_by_reason(by_reason: dict[str, int]) -> bytes:
    fig, (ax,) = _figure()
    reasons = sorted(by_reason, key=lambda reason: -by_reason[reason])
    bars = ax.barh(reasons, [by_reason[r] for r in reasons], color=RED, height=0.5)
    ax.bar_label(bars, fontsize=8, padding=2)
    ax.set_ylim(max(len(reasons), 4) - 0.5, -0.5)  # top to bottom, and a few reasons keep slim bars
    ax.set_xlabel("red flags (discarded samples)", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(False, axis="y")
    return _png(fig)


def red_flags_over_steps(steps: Sequence[int], red_flags: Sequence[int]) -> bytes:
    """The red flags of the committed steps, summed up to each step."""
    fig, (ax,) = _figure()
    total, running = 0, []
    for n in red_flags:
        total += n
        running.append(total)
    ax.step(steps, running, where="post", color=RED, linewidth=1.2)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("red flags so far", fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    return _png(fig)


def cost_over_steps(steps: Sequence[int], spent_usd: Sequence[float]) -> bytes:
    fig, (ax,) = _figure()
    if len(steps) <= MAX_POINTS:
        ax.plot(steps, spent_usd, color=BLUE, linewidth=1.2)
    else:
        xs, _, maxes = _binned(steps, spent_usd)  # spend only grows: a bin's max is its end
        ax.plot(xs, maxes, color=BLUE, linewidth=1.2)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("spent by the commit", fontsize=8)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.4g}"))
    ax.set_ylim(bottom=0)
    return _png(fig)


def k_over_steps(steps: Sequence[int], ks: Sequence[int]) -> bytes:
    fig, (ax,) = _figure()
    changes = [(s, k) for i, (s, k) in enumerate(zip(steps, ks, strict=True)) if i == 0 or k != ks[i - 1]]
    xs = [s for s, _ in changes] + [steps[-1]]
    ys = [k for _, k in changes] + [ks[-1]]
    ax.step(xs, ys, where="post", color=BLUE, linewidth=1.5)
    ax.set_ylim(0, max(ks) + 1)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("k (margin to decide)", fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def samples_against_steps(runs: Sequence[tuple[str, int, int]]) -> tuple[bytes, float]:
    """Each run's total samples against its steps, and the least-squares c of samples = c·s·ln s;
    returns the PNG and c."""
    fig, (ax,) = _figure()
    sized = [(label, s, n) for label, s, n in runs if s > 1]
    weights = [s * math.log(s) for _, s, _ in sized]
    c = sum(w * n for w, (_, _, n) in zip(weights, sized, strict=True)) / sum(w * w for w in weights)
    low, high = min(s for _, s, _ in sized), max(s for _, s, _ in sized)
    spread = high / low > 20
    if spread:
        xs = [low * (high / low) ** (i / 100) for i in range(101)]
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        xs = [low + (high - low) * i / 100 for i in range(101)]
    ax.plot(xs, [c * x * math.log(x) for x in xs], "--", color=ORANGE, linewidth=1, label=f"{c:.3g} · s · ln s")
    ax.plot([s for _, s, _ in sized], [n for _, _, n in sized], "o", color=BLUE, markersize=5, label="runs")
    for i, (label, s, n) in enumerate(sorted(sized, key=lambda run: run[1:])):
        lift = -11 if i % 2 == 0 else 4  # runs of one size sit close: their labels alternate below and above
        ax.annotate(label, (s, n), textcoords="offset points", xytext=(5, lift), fontsize=7, color="#444")
    ax.set_xlabel("steps s", fontsize=8)
    ax.set_ylabel("samples drawn", fontsize=8)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    return _png(fig), c
