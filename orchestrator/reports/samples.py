"""What the model said: each sample's text (an excerpt) and verdict, read back from the run's events, where the vote
script keeps them with every vote and red flag. `maker samples`, `maker vote --json`, `--trace-samples`, the
report's red-flag examples and the message of a step that failed all read them here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import redis
from pydantic import BaseModel

from maker_workers import keys
from maker_workers.errors import store_errors

VERDICTS = ("vote", "red_flag", "late", "error", "fatal")  # the event kinds that say what became of a sample
PAGE = 1_000
QUOTED = 300  # characters of an answer a message quotes


class Sample(BaseModel):
    """One sample as its event tells it."""

    step: int
    input: str  # the contest's input hash
    sample: str
    verdict: str  # vote, red_flag, late (a vote after the decision), error, fatal
    answer: str | None = None  # a vote's candidate (its vote key)
    reason: str | None = None  # a red flag's or error's short reason (parse, truncated, ...)
    detail: str | None = None  # the parser's own words on a red flag
    text: str | None = None  # what the model said (the first characters the workers keep)
    repeated: bool = False  # a copy: the text repeated one already counted in the contest, byte for byte
    model: str | None = None
    output_tokens: int | None = None

    @classmethod
    def from_event(cls, fields: dict[str, str]) -> Sample:
        tokens = fields.get("output_tokens")
        return cls(
            step=int(fields.get("step", -1)),
            input=fields.get("input", ""),
            sample=fields.get("sample", ""),
            verdict=fields["kind"],
            answer=fields.get("candidate"),
            reason=fields.get("reason"),
            detail=fields.get("detail"),
            text=fields.get("text"),
            repeated=fields.get("copy") == "1",
            model=fields.get("model"),
            output_tokens=int(tokens) if tokens else None,
        )

    def quoted(self) -> str:
        """The answer as a message quotes it: its text, cut to a few lines' worth."""
        text = self.text or ""
        return repr(text if len(text) <= QUOTED else f"{text[:QUOTED]}...")


def _decoded(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}


def samples(client: redis.Redis, run_id: str, *, step: int | None = None, red_flags: bool = False) -> Iterator[Sample]:
    """Every sample the run's events still hold (the stream is capped: a long run keeps its latest), oldest first."""
    after = "-"
    stream = keys.events(run_id)
    while True:
        with store_errors(f"reading the samples of run {run_id}"):
            page = client.xrange(stream, min=after, count=PAGE)
        for entry_id, raw in page:
            after = f"({entry_id.decode()}"
            fields = _decoded(raw)
            if fields.get("kind") not in VERDICTS:
                continue
            if step is not None and fields.get("step") != str(step):
                continue
            if red_flags and fields["kind"] != "red_flag":
                continue
            yield Sample.from_event(fields)
        if len(page) < PAGE:
            return


def recent(client: redis.Redis, run_id: str, count: int = 500) -> list[Sample]:
    """The run's latest samples (up to `count` events back), newest first."""
    with store_errors(f"reading the samples of run {run_id}"):
        page = client.xrevrange(keys.events(run_id), count=count)
    return [Sample.from_event(f) for f in map(_decoded, (raw for _, raw in page)) if f.get("kind") in VERDICTS]


class Thrown(BaseModel):
    """Why a run's answers were thrown away: the commonest red flag, how often, and one answer that had it."""

    reason: str
    count: int
    of: int  # red flags seen
    example: Sample

    def __str__(self) -> str:
        why = f" ({self.example.detail})" if self.example.detail else ""
        return (
            f"the commonest red flag was {self.reason!r} ({self.count} of {self.of}){why}; "
            f"one such answer: {self.example.quoted()}"
        )


def thrown(client: redis.Redis, run_id: str, step: int | None = None) -> Thrown | None:
    """The commonest red flag among the run's latest samples (of `step`, if given), or None without any."""
    flagged = [s for s in recent(client, run_id) if s.verdict == "red_flag" and (step is None or s.step == step)]
    if not flagged:
        return None
    (reason, count), *_ = Counter(s.reason or "" for s in flagged).most_common(1)
    example = next(s for s in flagged if s.reason == reason)
    return Thrown(reason=reason, count=count, of=len(flagged), example=example)


def examples(client: redis.Redis, run_id: str) -> dict[str, Sample]:
    """One answer for each red flag reason among the run's latest samples: what the report shows."""
    found: dict[str, Sample] = {}
    for sample in recent(client, run_id, 5_000):
        if sample.verdict == "red_flag" and sample.reason and sample.reason not in found:
            found[sample.reason] = sample
    return found


class Tail:
    """Follows a run's samples as they come, to hand each committed step its own (`--trace-samples`): one read of
    the new events per commit, never the whole stream again."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self._client = client
        self._run_id = run_id
        self._after = "-"
        self._by_contest: dict[tuple[int, str], list[Sample]] = {}

    def take(self, step: int, input_hash: str) -> list[Sample]:
        """The samples of one contest heard so far (those of earlier steps are let go: their steps are committed)."""
        stream = keys.events(self._run_id)
        while True:
            with store_errors(f"reading the samples of run {self._run_id}"):
                page = self._client.xrange(stream, min=self._after, count=PAGE)
            for entry_id, raw in page:
                self._after = f"({entry_id.decode()}"
                fields = _decoded(raw)
                if fields.get("kind") in VERDICTS:
                    sample = Sample.from_event(fields)
                    if sample.step >= step:
                        self._by_contest.setdefault((sample.step, sample.input), []).append(sample)
            if len(page) < PAGE:
                break
        for at in [at for at in self._by_contest if at[0] < step]:
            del self._by_contest[at]
        return self._by_contest.pop((step, input_hash), [])
