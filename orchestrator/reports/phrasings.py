"""Which phrasings were counted together: the candidates of semantic contests, from the run's events.

The vote script (lua/semantic.lua) writes one `phrasing` event per counted vote of a semantic contest:
the candidate it joined (named by its representative's vote key) and the answer itself. A contest's keys
go at commit, so the report reads what the event stream kept.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import redis
from pydantic import BaseModel

from maker_workers import keys
from maker_workers.errors import store_errors

PAGE = 10_000


class Candidate(BaseModel):
    """One meaning in a contest: its representative (what the winner hands on) and every phrasing counted for it."""

    representative: str  # the vote key of its first answer
    votes: int
    members: dict[str, int]  # each answer's vote key -> votes, most first


def phrasings(client: redis.Redis, run_id: str) -> dict[int, list[Candidate]]:
    """Each step's candidates, most votes first. Where a step was voted on with several inputs (guesses),
    the one decided last is kept: the input that was committed."""
    counted: dict[tuple[int, str], dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    decided: dict[int, str] = {}
    start = "-"
    with store_errors(f"reading the events of run {run_id}"):
        while page := client.xrange(keys.events(run_id), min=start, count=PAGE):
            for _, raw in page:
                event = {k.decode(): v.decode() for k, v in raw.items()}
                step = int(event["step"])
                if event["kind"] == "phrasing":
                    counted[(step, event["input"])][event["candidate"]][event["answer"]] += 1
                elif event["kind"] == "decided":
                    decided[step] = event["input"]
            start = "(" + page[-1][0].decode()
    steps: dict[int, list[Candidate]] = {}
    for (step, input_hash), candidates in sorted(counted.items()):
        if decided.get(step, input_hash) != input_hash:
            continue
        steps[step] = sorted(
            (
                Candidate(
                    representative=rep,
                    votes=sum(members.values()),
                    members={rep: members[rep], **dict(members.most_common())},  # the representative first
                )
                for rep, members in candidates.items()
            ),
            key=lambda c: -c.votes,
        )
    return steps
