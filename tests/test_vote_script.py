"""The Lua vote script against a real redis-server: the invariants of DESIGN.md."""

from __future__ import annotations

import json
from collections import Counter

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from maker_workers import keys
from maker_workers.votes import Contest, Drawer, Outcome, Said, Snapshot, VoteBook
from orchestrator.engine.store import RunStore


def contest(k: int = 3, step: int = 0, run_id: str = "r1") -> Contest:
    return Contest(run_id=run_id, step=step, input_hash="abc", k=k)


def notices(client: redis.Redis, run_id: str = "r1") -> list[dict]:
    return [json.loads(m) for m in client.lrange(keys.notify(run_id), 0, -1)]


def events(client: redis.Redis, run_id: str = "r1") -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(keys.events(run_id))]


def test_first_to_ahead_by_k_not_first_to_k(book: VoteBook) -> None:
    c = contest(k=2)
    for i, vote in enumerate(["A", "B", "A", "B", "A"]):
        assert book.record(c, f"s{i}", "vote", vote).outcome is Outcome.VOTE  # A has 3 but only 1 ahead
    decided = book.record(c, "s5", "vote", "A")
    assert decided.outcome is Outcome.DECIDED
    assert (decided.leader_votes, decided.runner_up_votes) == (4, 2)


def test_decision_carries_the_winners_payload_and_notifies(book: VoteBook, client: redis.Redis) -> None:
    c = contest(k=2)
    payload = '{"move":[1,0,2],"next_state":[[2],[],[1]]}'
    book.record(c, "a", "vote", payload)
    book.record(c, "b", "vote", payload)
    last = notices(client)[-1]
    assert last["outcome"] == "decided" and last["snapshot"]["winner"] == payload
    assert last["snapshot"]["votes"] == 2 and last["snapshot"]["samples"] == 2
    assert book.snapshot(c).decided


def test_a_redelivered_sample_counts_once(book: VoteBook, client: redis.Redis) -> None:
    c = contest(k=2)
    assert book.record(c, "same", "vote", "A").outcome is Outcome.VOTE
    assert book.record(c, "same", "vote", "A").outcome is Outcome.DUPLICATE
    assert book.record(c, "same", "vote", "A").outcome is Outcome.DUPLICATE
    assert client.hget(keys.step("r1", 0, "abc").tally, "A") == b"1"
    assert not book.snapshot(c).decided
    assert len(notices(client)) == 1  # the orchestrator hears of a sample once


def test_votes_after_a_decision_are_late_and_not_counted(book: VoteBook, client: redis.Redis) -> None:
    c = contest(k=1)
    assert book.record(c, "a", "vote", "A").outcome is Outcome.DECIDED
    assert book.record(c, "b", "vote", "B").outcome is Outcome.LATE
    assert book.record(c, "c", "vote", "B").outcome is Outcome.LATE
    status = client.hgetall(keys.step("r1", 0, "abc").status)
    assert status[b"winner"] == b"A" and status[b"late"] == b"2"
    assert client.hget(keys.step("r1", 0, "abc").tally, "B") is None
    assert client.hget(keys.stats("r1"), "late_votes") == b"2"


def test_red_flags_and_errors_never_become_votes(book: VoteBook, client: redis.Redis) -> None:
    c = contest(k=1)
    assert book.record(c, "a", "red_flag", "parse", 10, 5).outcome is Outcome.RED_FLAG
    assert book.record(c, "b", "red_flag", "too_long", 10, 751).outcome is Outcome.RED_FLAG
    assert book.record(c, "c", "error", "Unavailable: down").outcome is Outcome.ERROR
    assert not book.snapshot(c).decided
    assert client.hlen(keys.step("r1", 0, "abc").tally) == 0
    stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats("r1")).items()}
    assert stats["red_flags"] == 2 and stats["red_flag:parse"] == 1 and stats["red_flag:too_long"] == 1
    assert stats["errors"] == 1 and stats["samples"] == 3 and stats["output_tokens"] == 756
    assert [n["reason"] for n in notices(client)] == ["parse", "too_long", "Unavailable: down"]


def test_contests_are_keyed_by_step_and_input_state(book: VoteBook) -> None:
    one = Contest(run_id="r1", step=5, input_hash="h1", k=1)
    other_input = Contest(run_id="r1", step=5, input_hash="h2", k=1)
    assert book.record(one, "a", "vote", "A").outcome is Outcome.DECIDED
    assert book.record(other_input, "b", "vote", "B").outcome is Outcome.DECIDED  # a separate contest


def test_every_vote_red_flag_and_decision_is_an_event(book: VoteBook, client: redis.Redis) -> None:
    c = contest(k=1)
    book.record(c, "a", "red_flag", "parse")
    book.record(c, "b", "vote", "A")
    book.record(c, "c", "vote", "B")
    book.record(c, "c", "vote", "B")
    assert [e["kind"] for e in events(client)] == ["red_flag", "vote", "decided", "late", "duplicate"]
    assert events(client)[2]["candidate"] == "A"


def test_all_keys_of_a_run_share_one_cluster_slot(client: redis.Redis) -> None:
    step = keys.step("run-7", 12, "ff00")
    names = [
        step.seen,
        step.tally,
        step.status,
        step.payloads,
        keys.notify("run-7"),
        keys.answers("run-7"),
        keys.events("run-7"),
        keys.stats("run-7"),
        keys.meta("run-7"),
        keys.checkpoint("run-7"),
    ]
    assert all("{run-7}" in name for name in names)
    assert len({key_slot(name.encode()) for name in names}) == 1


def reference_decision(votes: list[str], k: int) -> tuple[str | None, int]:
    """The method written plainly: the first vote after which one candidate leads all others by k."""
    tally: Counter[str] = Counter()
    for i, vote in enumerate(votes):
        tally[vote] += 1
        ranked = [*sorted(tally.values(), reverse=True), 0]
        if ranked[0] >= k + ranked[1]:
            return vote, i
    return None, len(votes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k=st.integers(1, 5),
    votes=st.lists(st.sampled_from(["A", "B", "C", "D"]), max_size=40),
    redeliver=st.lists(st.integers(0, 39), max_size=10),
)
def test_script_matches_the_method_on_any_vote_sequence(
    client: redis.Redis, k: int, votes: list[str], redeliver: list[int]
) -> None:
    client.flushall()
    book = VoteBook(client)
    c = contest(k=k)
    winner, decided_at = reference_decision(votes, k)
    deliveries = [(i, v) for i, v in enumerate(votes)]
    for j in redeliver:  # Celery redelivers some samples right after their first delivery
        if j < len(votes):
            at = next(p for p, (i, _) in enumerate(deliveries) if i == j)
            deliveries.insert(at + 1, (j, votes[j]))
    outcomes = {}
    for i, vote in deliveries:
        result = book.record(c, f"s{i}", "vote", vote)
        if i in outcomes:
            assert result.outcome is Outcome.DUPLICATE
            continue
        outcomes[i] = result.outcome
        if result.outcome is Outcome.DECIDED:
            assert result.leader_votes >= k + result.runner_up_votes  # never without the margin
    decided = [i for i, o in outcomes.items() if o is Outcome.DECIDED]
    if winner is None:
        assert decided == [] and not book.snapshot(c).decided  # no plurality, no guess
    else:
        assert decided == [decided_at]
        assert client.hget(keys.step("r1", 0, "abc").status, "winner").decode() == winner
        assert all(o is Outcome.LATE for i, o in outcomes.items() if i > decided_at)


def test_every_contest_key_expires_so_dropped_guesses_never_leak(client: redis.Redis) -> None:
    book = VoteBook(client, contest_ttl_s=120)
    decided, dropped, flagged = contest(k=1, step=1), contest(k=3, step=2), contest(k=3, step=3)
    book.record(decided, "a", "vote", "A")
    book.record(dropped, "b", "vote", "B")  # a speculative guess nobody follows up
    book.record(flagged, "c", "red_flag", "parse")
    book.record(flagged, "d", "vote", "C")  # the tally appears after the first sample
    for c in (decided, dropped, flagged):
        step = keys.step("r1", c.step, "abc")
        assert all(0 < client.ttl(name) <= 120 for name in (step.seen, step.tally, step.status))


def test_a_contests_keys_expire_together_whenever_each_appears(client: redis.Redis) -> None:
    book = VoteBook(client, contest_ttl_s=120)
    c = contest(k=3)
    book.record(c, "a", "red_flag", "parse")
    step = c.keys
    client.expire(step.status, 30)  # as if the first sample came 90 s ago
    client.expire(step.seen, 30)
    book.record(c, "b", "vote", "A", payload='{"a": 1}')  # tally and payloads appear only now
    ttls = [client.ttl(name) for name in (step.seen, step.tally, step.status, step.payloads)]
    assert max(ttls) - min(ttls) <= 1 and max(ttls) <= 30, ttls


def test_a_contest_counts_one_vote_drawn_at_the_first_temperature(client: redis.Redis) -> None:
    """At T=0 a model answers the same every time: a second T=0 vote would be the first one again. A sample that
    claimed the first draw, then lost the claim while in flight (its guess dropped, the keys expired, the guess
    opened again and another sample claimed it), is red-flagged; one landing where nobody holds the claim takes it."""
    book = VoteBook(client, contest_ttl_s=120)
    c = contest(k=3)
    assert book.claim_first(c, "old")
    client.delete(*c.keys.every())  # the dropped guess's keys expired, the claim with them
    assert book.claim_first(c, "new")  # the guess came back: a new first sample
    assert book.record(c, "new", "vote", "A", first=True).outcome is Outcome.VOTE
    late = book.record(c, "old", "vote", "A", first=True)  # the old one lands after all
    assert late.outcome is Outcome.RED_FLAG and late.reason == "second_first_sample"  # the worker's metric's label
    assert client.hget(keys.stats("r1"), "red_flag:second_first_sample") == b"1"
    warm = book.record(c, "warm", "vote", "A")  # drawn at the later temperature: counts
    assert warm.outcome is Outcome.VOTE and warm.reason is None
    assert book.snapshot(c).leader_votes == 2

    other = contest(k=3, step=1)
    assert book.record(other, "lone", "vote", "B", first=True).outcome is Outcome.VOTE  # nobody held the claim
    assert client.get(other.keys.first) == b"lone" and 0 < client.ttl(other.keys.first) <= 120
    assert not book.claim_first(other, "another")  # so no other sample is drawn at T=0


def test_a_t0_claim_lives_no_longer_than_its_contests_status(client: redis.Redis) -> None:
    """A first sample that reaches a worker after its step was committed, or its guess dropped (the status then
    lingers a minute), must not leave a claim behind for the contest's whole TTL: a guess opened again would find
    the claim without the votes, and the key would outlive the contest."""
    book = VoteBook(client, contest_ttl_s=3_600)
    lingering = contest(k=3, step=7)
    book.record(lingering, "s1", "vote", "A")
    client.expire(lingering.keys.status, 60)  # what a commit or `forget` leaves
    assert book.claim_first(lingering, "late")
    assert 0 < client.ttl(lingering.keys.first) <= 60
    assert book.claim_first(lingering, "late")  # delivered twice: still its own
    assert not book.claim_first(lingering, "other")

    unopened = contest(k=3, step=8)  # no status yet: the contest's own TTL
    assert book.claim_first(unopened, "first")
    assert 3_590 < client.ttl(unopened.keys.first) <= 3_600


def test_every_notice_carries_the_contests_whole_snapshot(book: VoteBook, client: redis.Redis) -> None:
    c = contest(k=3)
    for i, vote in enumerate(["A", "B", "B", "A", "C"]):
        book.record(c, f"s{i}", "vote", vote)
    book.record(c, "s5", "red_flag", "parse")
    snapshots = [n["snapshot"] for n in notices(client)]
    assert [(s["leader"], s["leader_votes"], s["runner_up_votes"]) for s in snapshots] == [
        ("A", 1, 0),
        ("A", 1, 1),
        ("B", 2, 1),
        ("B", 2, 2),
        ("B", 2, 2),
        ("B", 2, 2),
    ]
    assert snapshots[-1] | {"decided": False} == snapshots[-1]
    assert (snapshots[-1]["samples"], snapshots[-1]["votes"], snapshots[-1]["red_flags"]) == (6, 5, 1)
    assert book.snapshot(c) == Snapshot.model_validate(snapshots[-1])  # what an orchestrator re-reads


def test_a_payload_that_is_not_its_key_is_kept_once_and_handed_to_the_winner(
    book: VoteBook, client: redis.Redis
) -> None:
    c = contest(k=2)
    book.record(c, "a", "vote", '{"n":1}', payload='{"n":1,"why":"first"}')
    book.record(c, "b", "vote", '{"n":1}', payload='{"n":1,"why":"second"}')
    snapshot = notices(client)[-1]["snapshot"]
    assert snapshot["decided"] and snapshot["winner"] == '{"n":1}'
    assert json.loads(snapshot["leader_payload"]) == {"n": 1, "why": "first"}
    assert book.snapshot(c).leading_answer == {"n": 1, "why": "first"}
    assert book.tally(c) == {'{"n":1}': 2}


def test_the_winner_hands_on_its_first_votes_payload_even_when_that_was_the_key(book: VoteBook) -> None:
    c = contest(k=2)
    book.record(c, "a", "vote", '{"n":1}')  # payload == key: nothing stored
    book.record(c, "b", "vote", '{"n":1}', payload='{"n":1,"why":"later"}')
    assert book.snapshot(c).decided and book.snapshot(c).leading_answer == {"n": 1}


def test_cost_and_tokens_are_counted_per_model_and_each_notice_carries_the_spend(
    book: VoteBook, client: redis.Redis
) -> None:
    c = contest(k=5)
    a, b = Drawer(model="sim:a", cost_nusd=1500, by_model=True), Drawer(model="sim:b", cost_nusd=700, by_model=True)
    book.record(c, "s1", "vote", "A", input_tokens=10, output_tokens=5, drawn_by=a)
    book.record(c, "s2", "red_flag", "too_long", input_tokens=10, output_tokens=9, drawn_by=b)
    book.record(c, "s3", "vote", "A", input_tokens=10, output_tokens=5, drawn_by=b)
    book.record(c, "s3", "vote", "A", input_tokens=10, output_tokens=5, drawn_by=b)  # redelivered: not paid twice
    assert [n["spent_nusd"] for n in notices(client)] == [1500, 2200, 2900]
    stats = RunStore(client, "r1").stats()
    assert stats["cost_nusd"] == 2900 and stats["input_tokens"] == 30
    assert (stats["model:sim:a:samples"], stats["model:sim:b:samples"], stats["model:sim:b:red_flags"]) == (1, 2, 1)
    assert (stats["model:sim:b:cost_nusd"], stats["model:sim:b:output_tokens"]) == (1400, 14)
    assert client.hgetall(c.keys.voters) == {b"sim:a A": b"1", b"sim:b A": b"1"}
    assert [e["cost_usd"] for e in events(client)] == ["0.000001500", "0.000000700", "0.000000700", "0.000000700"]


def test_a_sample_of_unknown_price_makes_the_runs_cost_unknown(book: VoteBook, client: redis.Redis) -> None:
    book.record(contest(), "s1", "vote", "A", drawn_by=Drawer(model="openai:new-model", cost_nusd=None))
    assert notices(client)[-1]["cost_unknown"] == "openai:new-model"
    assert RunStore(client, "r1").stats()["cost_unknown"] == 1
    assert "cost_usd" not in events(client)[-1]


def test_a_fatal_refusal_is_an_error_kept_with_the_run(book: VoteBook, client: redis.Redis) -> None:
    book.record(contest(), "s1", "fatal", "openai answered 401: check OPENAI_API_KEY")
    book.record(contest(), "s2", "fatal", "a second one")
    assert [n["outcome"] for n in notices(client)] == ["fatal", "fatal"]
    assert client.hget(keys.stats("r1"), "fatal") == b"openai answered 401: check OPENAI_API_KEY"
    assert book.snapshot(contest()).errors == 2 and not book.snapshot(contest()).decided


def test_a_vote_whose_text_was_counted_already_is_a_copy_and_its_winner_counts_distinct_texts(
    book: VoteBook, client: redis.Redis
) -> None:
    c = contest(k=3)
    said = {name: Said(text=name, digest=name) for name in ("t1", "t2")}
    book.record(c, "a", "vote", "A", said=said["t1"])
    book.record(c, "b", "vote", "A", said=said["t1"])  # the same text again: a copy, still a vote
    book.record(c, "c", "vote", "A", said=Said(text="short"))  # no digest: too short to tell, never a copy
    snapshot = book.snapshot(c)
    assert snapshot.decided and snapshot.leader_votes == 3
    assert snapshot.copies == 1 and snapshot.winner_distinct == 2
    assert client.hget(keys.stats("r1"), "copies") == b"1"
    assert [e.get("copy") for e in events(client) if e["kind"] == "vote"] == [None, "1", None]
    assert [e.get("text") for e in events(client) if e["kind"] == "vote"] == ["t1", "t1", "short"]
    # The texts go with the contest's other keys at commit.
    RunStore(client, "r1").commit(0, "{}", {}, c.keys, "A", linger_s=60)
    assert not client.exists(c.keys.texts)


def test_a_sample_drawn_twice_is_one_vote_but_both_provider_calls_are_billed(
    book: VoteBook, client: redis.Redis
) -> None:
    c = contest(k=3)
    paid = Drawer(model="m:x", cost_nusd=1_000)
    book.record(c, "s1", "vote", "A", input_tokens=10, output_tokens=5, drawn_by=paid, said=Said(call="call-1"))
    # Celery redelivered it (or the publisher sent it twice): the model was called again, and billed again.
    again = book.record(c, "s1", "vote", "A", input_tokens=10, output_tokens=5, drawn_by=paid, said=Said(call="call-2"))
    # The worker's record of the second call sent twice (its reply was lost): the same call, billed once.
    book.record(c, "s1", "vote", "A", input_tokens=10, output_tokens=5, drawn_by=paid, said=Said(call="call-2"))
    assert again.outcome is Outcome.DUPLICATE and book.snapshot(c).votes == 1
    stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats("r1")).items() if k != b"fatal"}
    assert (stats["input_tokens"], stats["output_tokens"], stats["cost_nusd"]) == (20, 10, 2_000)
    assert stats["samples"] == 1 and stats["duplicates"] == 2 and stats["duplicate_calls"] == 1


def test_cache_reads_and_writes_are_counted_per_model_and_once_per_provider_call(
    book: VoteBook, client: redis.Redis
) -> None:
    c = contest(k=3)
    paid = Drawer(model="anthropic:claude-x", cost_nusd=1_000)
    wrote = Said(call="call-1", cache_write_tokens=1_100)
    book.record(c, "s1", "vote", "A", input_tokens=1_120, output_tokens=5, drawn_by=paid, said=wrote)
    book.record(c, "s1", "vote", "A", input_tokens=1_120, output_tokens=5, drawn_by=paid, said=wrote)  # resent
    read = Said(call="call-2", cached_tokens=1_100)
    book.record(c, "s2", "red_flag", "too_long", input_tokens=1_120, output_tokens=9, drawn_by=paid, said=read)
    stats = RunStore(client, "r1").stats()
    assert (stats["input_tokens"], stats["cached_input_tokens"], stats["cache_write_input_tokens"]) == (
        2_240,
        1_100,
        1_100,
    )
    assert stats["model:anthropic:claude-x:cache_write_input_tokens"] == 1_100
    assert stats["model:anthropic:claude-x:cached_input_tokens"] == 1_100


def test_a_contests_k_is_fixed_by_its_first_sample_and_no_sample_decides_it_at_another(book: VoteBook) -> None:
    book.record(contest(k=5), "a", "vote", "A")  # opened at k=5 (adaptive k had raised it)
    # An older sample, sent when k was 2, lands: two votes ahead would decide at k=2, never at the contest's k=5.
    assert book.record(contest(k=2), "b", "vote", "A").outcome is Outcome.VOTE
    assert book.snapshot(contest(k=2)).k == 5
    for sample in "cde":
        last = book.record(contest(k=2), sample, "vote", "A")
    assert last.outcome is Outcome.DECIDED and last.leader_votes == 5
