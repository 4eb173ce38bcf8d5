"""`maker report`: the page from real runs' traces and from a real run's Redis, its plots and its figures."""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import pytest
import redis

from orchestrator.cluster.embedded import Embedded
from orchestrator.reports import html_report
from tests.conftest import run_cli

FIGURES = ("steps", "samples", "votes", "red_flags", "cost_usd")
PRICED = ("--price-in", "0.4", "--price-out", "1.6")  # the sim's samples cost something, so cost is plotted


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def table(page: str) -> dict[str, list[tuple[str, str]]]:
    """Each row of the figures table: (raw value, shown text) for each run's column."""
    rows = re.findall(r'<tr data-figure="(\w+)">(.*?)</tr>', page, re.S)
    return {name: re.findall(r'<td data-value="([^"]*)">([^<]*)</td>', cells) for name, cells in rows}


def assert_plots_are_real(page: str, at_least: int) -> None:
    images = pngs(page)
    assert len(images) >= at_least
    for png in images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        assert 400 <= width <= 2000 and 250 <= height <= 1500
    # every chart is an image or says why it is not there: never an empty frame
    assert page.count("<figure>") == len(images) + page.count('class="missing"')


def assert_figures_match(page: str, reports: list[dict]) -> None:
    rows = table(page)
    for column, report in enumerate(reports):
        for name in FIGURES:
            raw, shown = rows[name][column]
            if name == "cost_usd":
                assert float(raw) == pytest.approx(report[name], abs=1e-9)
                assert shown == f"${report[name]:,.4f}"
            else:
                assert int(raw) == report[name] and shown.replace(",", "") == raw


def hanoi_json(*args: str) -> dict:
    result = run_cli("hanoi", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_traces_of_two_sizes_make_one_page_with_their_figures_and_the_s_ln_s_fit(tmp_path: Path) -> None:
    traces = [tmp_path / "five.jsonl", tmp_path / "seven.jsonl"]
    # A trace counts what its committed steps counted; without speculation that is everything the run drew
    # (with it, the report also counts the samples its dropped guesses drew: `wasted_samples`).
    reports = [
        hanoi_json("--disks", str(disks), "--trace", str(trace), "--speculate", "0", *PRICED)
        for disks, trace in zip((5, 7), traces, strict=True)
    ]
    out = tmp_path / "report.html"
    result = run_cli("report", "--trace", str(traces[0]), "--trace", str(traces[1]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert "<script" not in page and "http" not in page.split("<body>")[1]  # self-contained
    # per run: votes, cost and k always; the scaling plot across them
    assert_plots_are_real(page, at_least=1 + 2 * 3)
    assert_figures_match(page, reports)
    assert re.search(r"samples ≈ [\d.]+ · s · ln s", page)
    assert "red flags, not their reasons" in page  # a trace has no reasons: said, not drawn blank


def test_a_run_in_redis_reports_its_figures_and_its_votes_per_committed_input(
    cluster: Embedded, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.jsonl"
    report = hanoi_json("--disks", "5", "--redis-url", cluster.redis_url, "--trace", str(trace))
    out = tmp_path / "report.html"
    result = run_cli("report", report["run_id"], "--redis-url", cluster.redis_url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert_plots_are_real(page, at_least=2)  # votes and k; the sim is free, so cost is a note
    assert_figures_match(page, [report])
    rows = table(page)
    assert int(rows["input_tokens"][0][0]) == report["input_tokens"]
    assert "rounds (batches of samples the orchestrator sent) are not kept in Redis" in page
    # How the run ended comes first: solved, its errors (scored after commit), no failure.
    assert list(rows)[:3] == ["ended", "errors", "failure"]
    assert (rows["ended"][0][0], int(rows["errors"][0][0])) == (
        "solved" if report["solved"] else "NOT solved",
        report["errors"],
    )

    # the events of each step's committed input are found again from the answer log: same votes as the trace
    client = redis.Redis.from_url(cluster.redis_url)
    run = html_report.from_redis(client, cluster.redis_url, report["run_id"])
    client.close()
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(p.step, p.votes, p.k) for p in run.points] == [(line["step"], line["votes"], line["k"]) for line in lines]
    assert run.points[-1].spent_usd == report["cost_usd"] == 0.0


def test_a_trace_from_before_report_is_drawn_as_far_as_it_goes(tmp_path: Path) -> None:
    trace = tmp_path / "old.jsonl"
    trace.write_text(
        "".join(json.dumps({"step": i, "move": [1, 0, 2], "samples": 4, "votes": 3}) + "\n" for i in range(9))
    )
    page = html_report.render([html_report.from_trace(trace)])
    assert "Not drawn: this trace has no `rounds`" in page and "no `spent_usd`" in page and "no `k`" in page
    assert_plots_are_real(page, at_least=1)
    assert "needs runs of at least two sizes" in page


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it"),
        ("not json\n", "line 1 is not a step of a trace"),
        ('{"step": 0, "samples": 3}\n', "line 1 is not a step of a trace"),
        ("\n", "holds no step"),
    ],
)
def test_an_unreadable_trace_gets_one_clear_message(tmp_path: Path, content: str | None, message: str) -> None:
    trace = tmp_path / "trace.jsonl"
    if content is not None:
        trace.write_text(content)
    result = run_cli("report", "--trace", str(trace), "--out", str(tmp_path / "r.html"))
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1 and message in " ".join(result.stderr.split())
    assert not (tmp_path / "r.html").exists()


def test_a_run_that_is_not_there_is_named(cluster: Embedded, tmp_path: Path) -> None:
    missing = run_cli("report", "nosuchrun", "--redis-url", cluster.redis_url, "--out", str(tmp_path / "r.html"))
    assert missing.returncode == 1
    assert f"no run nosuchrun in the Redis at {cluster.redis_url}" in " ".join(missing.stderr.split())
    no_redis = run_cli("report", "somerun")
    assert no_redis.returncode == 2 and "--redis-url" in no_redis.stderr
    nothing = run_cli("report")
    assert nothing.returncode == 2 and "nothing to report" in nothing.stderr
