"""Votes on meaning: the vote script's atomic assignment (lua/semantic.lua) against a plain reference, on a
real redis-server, and the parts a worker uses to embed an answer."""

from __future__ import annotations

import math
import struct
import uuid
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maker_workers import keys
from maker_workers.domains.answers import SemanticMatch
from maker_workers.domains.base import RedFlag
from maker_workers.semantic import unit_vector
from maker_workers.votes import Contest, Meaning, Outcome, VoteBook
from orchestrator.engine.store import RunStore
from orchestrator.reports.phrasings import phrasings


def meaning(vector: list[float], threshold: float = 0.8, group: str = "", cap: int = 16, **more: int) -> Meaning:
    return Meaning(vector=unit_vector(vector), group=group, threshold=threshold, max_candidates=cap, **more)


def stats(client: redis.Redis, run_id: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keys.stats(run_id)).items()}


@dataclass
class Reference:
    """The assignment and the ranking written plainly, one vote at a time: what the script must agree with. A vote
    is as near a candidate as it is to the nearest of its stored answers (the first, and up to `keep` others)."""

    k: int
    threshold: float  # join
    cap: int
    open_below: float | None = None
    keep: int = 8
    candidates: dict[str, tuple[str, dict[str, tuple[float, ...]]]] = field(default_factory=dict)
    tally: dict[str, int] = field(default_factory=dict)
    leader: str | None = None
    leader_votes: int = 0
    runner_up_votes: int = 0
    decided: bool = False

    def vote(self, key: str, group: str, packed: bytes) -> tuple[str, int, int]:
        if self.decided:
            return "late", self.leader_votes, self.runner_up_votes
        mine = struct.unpack(f"<{len(packed) // 4}f", packed)
        best, best_similarity = None, 0.0
        for candidate, (other_group, stored) in self.candidates.items():
            if other_group != group:
                continue
            nearest = max(
                1.0 if answer == key else sum(a * b for a, b in zip(mine, other, strict=True))
                for answer, other in stored.items()
            )
            tie = best is not None and nearest == best_similarity and candidate.encode() < best.encode()
            if best is None or nearest > best_similarity or tie:
                best, best_similarity = candidate, nearest
        opens = self.threshold if self.open_below is None else self.open_below
        if best is not None and best_similarity >= self.threshold:
            stored = self.candidates[best][1]
            first = sum(a * b for a, b in zip(mine, stored[best], strict=True)) if best != key else 1.0
            if best_similarity < 1 and best != key and len(stored) - 1 < self.keep and first >= opens:
                stored[key] = mine
        elif best is not None and best_similarity >= opens:
            return "red_flag", self.leader_votes, self.runner_up_votes
        else:
            if len(self.candidates) >= self.cap:
                return "red_flag", self.leader_votes, self.runner_up_votes
            self.candidates[key] = (group, {key: mine})
            best = key
        votes = self.tally[best] = self.tally.get(best, 0) + 1
        if best == self.leader:
            self.leader_votes = votes
        elif votes > self.leader_votes:
            self.runner_up_votes, self.leader, self.leader_votes = self.leader_votes, best, votes
        elif votes > self.runner_up_votes:
            self.runner_up_votes = votes
        if self.leader_votes >= self.k + self.runner_up_votes:
            self.decided = True
            return "decided", self.leader_votes, self.runner_up_votes
        return "vote", self.leader_votes, self.runner_up_votes


_COMPONENT = st.floats(-1, 1, allow_nan=False).filter(lambda x: abs(x) > 1e-3)
_VOTE = st.tuples(
    st.sampled_from("abcdefgh"), st.sampled_from(["", '{"label":"x"}']), st.lists(_COMPONENT, min_size=3, max_size=3)
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    votes=st.lists(_VOTE, min_size=1, max_size=25),
    threshold=st.floats(0.2, 0.99),
    band=st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    keep=st.integers(0, 3),
    k=st.integers(1, 4),
    cap=st.integers(2, 6),
)
def test_the_script_clusters_counts_and_decides_as_the_plain_reference_does(
    client: redis.Redis,
    votes: list[tuple[str, str, list[float]]],
    threshold: float,
    band: float,
    keep: int,
    k: int,
    cap: int,
) -> None:
    run_id = uuid.uuid4().hex[:12]
    book, contest = VoteBook(client), Contest(run_id=run_id, step=0, input_hash="h", k=k)
    opens = threshold - band
    reference = Reference(k=k, threshold=threshold, cap=cap, open_below=opens, keep=keep)
    for i, (answer, group, vector) in enumerate(votes):
        key = group + answer  # answers of different groups never share a key, as canonical JSON ensures
        semantic = meaning(vector, threshold, group, cap, members_kept=keep).model_copy(update={"open_below": opens})
        got = book.record(contest, f"s{i}", "vote", key, meaning=semantic)
        expected = reference.vote(key, group, semantic.vector)
        assert (got.outcome.value, got.leader_votes, got.runner_up_votes) == expected
    assert book.tally(contest) == {key: n for key, n in reference.tally.items()}
    stored = client.hgetall(contest.keys.vectors)
    members = {c if a == c else f"{c}\0{a}" for c, (_, answers) in reference.candidates.items() for a in answers}
    assert {key.decode() for key in stored} == members
    assert book.snapshot(contest).candidates == len(reference.candidates)


def test_paraphrases_join_the_first_answer_which_the_winner_hands_on(book: VoteBook, client: redis.Redis) -> None:
    contest = Contest(run_id="r1", step=0, input_hash="h", k=2)
    first = book.record(contest, "a", "vote", '"paris is the capital"', payload="", meaning=meaning([1, 0.1, 0]))
    assert first.outcome is Outcome.VOTE
    book.record(contest, "b", "vote", '"london"', meaning=meaning([0, 1, 0]))
    book.record(contest, "c", "vote", '"the capital is paris"', meaning=meaning([1, 0, 0.1]))
    decided = book.record(contest, "d", "vote", '"it is paris"', meaning=meaning([1, 0.05, 0.05]))
    assert decided.outcome is Outcome.DECIDED and (decided.leader_votes, decided.runner_up_votes) == (3, 1)
    snapshot = book.snapshot(contest)
    assert snapshot.winner == '"paris is the capital"' and snapshot.leading_answer == "paris is the capital"
    assert book.tally(contest) == {'"paris is the capital"': 3, '"london"': 1}
    step = phrasings(client, "r1")[0]
    assert [(c.representative, c.votes) for c in step] == [('"paris is the capital"', 3), ('"london"', 1)]
    assert list(step[0].members) == ['"paris is the capital"', '"the capital is paris"', '"it is paris"']


def test_an_exact_field_keeps_answers_apart_however_alike_their_reasons(book: VoteBook) -> None:
    contest = Contest(run_id="r1", step=0, input_hash="h", k=3)
    same_reason = [1.0, 0.0, 0.0]
    book.record(contest, "a", "vote", "billing:x", meaning=meaning(same_reason, group='{"queue":"billing"}'))
    book.record(contest, "b", "vote", "account:x", meaning=meaning(same_reason, group='{"queue":"account"}'))
    book.record(contest, "c", "vote", "billing:y", meaning=meaning(same_reason, group='{"queue":"billing"}'))
    assert book.tally(contest) == {"billing:x": 2, "account:x": 1}


def test_a_contest_past_its_candidate_cap_red_flags_the_vote_and_says_so(book: VoteBook, client: redis.Redis) -> None:
    contest = Contest(run_id="r1", step=0, input_hash="h", k=3)
    for i, vector in enumerate([[1, 0, 0], [0, 1, 0]]):
        book.record(contest, f"s{i}", "vote", f"answer{i}", meaning=meaning(vector, cap=2))
    refused = book.record(contest, "s2", "vote", "answer2", meaning=meaning([0, 0, 1], cap=2))
    assert refused.outcome is Outcome.RED_FLAG and refused.reason == "too_many_candidates"
    joined = book.record(contest, "s3", "vote", "answer3", meaning=meaning([1, 0.01, 0], cap=2))
    assert joined.outcome is Outcome.VOTE  # a vote that joins a candidate is still counted
    snapshot = book.snapshot(contest)
    assert (snapshot.candidates, snapshot.over_cap, snapshot.red_flags) == (2, 1, 1)
    assert stats(client, "r1")["red_flag:too_many_candidates"] == 1


def test_embedding_tokens_and_cost_are_counted_with_the_vote(book: VoteBook, client: redis.Redis) -> None:
    contest = Contest(run_id="r1", step=0, input_hash="h", k=3)
    book.record(contest, "a", "vote", "x", meaning=meaning([1, 0, 0], tokens=12, cost_nusd=240))
    book.record(contest, "b", "vote", "y", meaning=meaning([0, 1, 0], tokens=8, cost_nusd=160))
    counted = stats(client, "r1")
    assert (counted["embedding_calls"], counted["embedding_tokens"], counted["embedding_cost_nusd"]) == (2, 20, 400)
    book.record(
        contest,
        "c",
        "vote",
        "z",
        meaning=Meaning(vector=unit_vector([0, 0, 1]), threshold=0.8, max_candidates=4, cost_nusd=None),
    )
    assert stats(client, "r1")["embedding_cost_unknown"] == 1


def test_candidate_vectors_expire_with_the_contest_and_go_at_commit(book: VoteBook, client: redis.Redis) -> None:
    contest = Contest(run_id="r1", step=0, input_hash="h", k=1)
    book.record(contest, "a", "vote", '"x"', meaning=meaning([1, 0, 0]))
    step = contest.keys
    assert 0 < client.ttl(step.vectors) <= client.ttl(step.status) + 1
    RunStore(client, "r1").commit(0, "next", "x", step, '"x"')
    assert not client.exists(step.vectors)


def test_a_vector_is_normalised_once_and_packed_as_float32() -> None:
    packed = unit_vector([3.0, 4.0])
    assert len(packed) == 8 and struct.unpack("<2f", packed) == pytest.approx((0.6, 0.8))
    with pytest.raises(ValueError, match="zeros"):
        unit_vector([0.0, 0.0])
    assert math.isclose(math.fsum(x * x for x in struct.unpack("<3f", unit_vector([1, 2, 2]))), 1, rel_tol=1e-6)


def test_what_is_embedded_leaves_out_the_fields_that_must_match_exactly() -> None:
    match = SemanticMatch(embeddings="sim", exact_fields=("queue",))
    assert match.split({"queue": "billing", "reason": "Charged twice."}) == ('{"queue":"billing"}', "Charged twice.")
    assert SemanticMatch(embeddings="sim").split("paris, of course") == ("", "paris, of course")
    with pytest.raises(RedFlag, match="queue"):
        match.split({"reason": "no queue given"})


def test_vectors_longer_than_luas_stack_are_compared_in_chunks(book: VoteBook) -> None:
    """8192 dimensions: unpacked in one call, that many values overflowed the script's stack."""
    contest = Contest(run_id="r-long", step=0, input_hash="h", k=2)
    base = [math.sin(i) for i in range(8192)]
    near = [v + 0.01 * math.cos(i) for i, v in enumerate(base)]
    book.record(contest, "a", "vote", '"one"', meaning=meaning(base))
    decided = book.record(contest, "b", "vote", '"one, said again"', meaning=meaning(near))
    assert decided.outcome is Outcome.DECIDED and book.tally(contest) == {'"one"': 2}
