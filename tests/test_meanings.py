"""The join rule read off answer.meanings (orchestrator/engine/meanings.py), and the spec checks around it: plain
vectors in, so each case is exact."""

from __future__ import annotations

import math

import pytest

from maker_workers.domains.answers import DEFAULT_THRESHOLD
from maker_workers.domains.spec import SpecError, SpecTask, spec_from_data
from maker_workers.errors import ConfigError
from orchestrator.engine.meanings import MARGIN, rule_from

MEANINGS = (("refund please", "money back"), ("parcel late", "where is my box"))


def at(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def cos(degrees: float) -> float:
    return math.cos(math.radians(degrees))


def test_meanings_one_threshold_separates_join_at_the_midpoint() -> None:
    # Paraphrases 10 degrees apart, the meanings' nearest pair 60 degrees: cos 10 > cos 60.
    rule = rule_from(MEANINGS, [at(0), at(10), at(70), at(80)], None, "m")
    assert rule.same_min == pytest.approx(cos(10), abs=1e-6) and rule.other_max == pytest.approx(cos(60), abs=1e-6)
    assert rule.join == rule.open_below == pytest.approx((cos(10) + cos(60)) / 2, abs=1e-4)
    assert rule.joined_share == 1 and "one threshold" in rule.describe()


def test_overlapping_meanings_get_a_band_where_votes_are_thrown_rather_than_merged() -> None:
    # A far paraphrase pair (40 degrees) and a close pair of different meanings (30 degrees): no threshold works.
    three = (("a1", "a2", "a3"), ("b1", "b2", "b3"))
    rule = rule_from(three, [at(0), at(5), at(40), at(70), at(75), at(78)], None, "m")
    assert rule.other_max == pytest.approx(cos(30), abs=1e-6) and rule.same_min == pytest.approx(cos(40), abs=1e-6)
    assert rule.join == pytest.approx(cos(30) + MARGIN) and rule.open_below == pytest.approx(cos(40) - MARGIN)
    assert rule.other_pair == ("a3", "b1") and rule.same_pair == ("a1", "a3")
    assert 0.5 <= rule.joined_share < 1 and "thrown as ambiguous" in rule.describe()


def test_meanings_the_model_cannot_tell_apart_are_refused_naming_the_pairs_and_the_ways_out() -> None:
    with pytest.raises(ConfigError) as refused:
        rule_from(MEANINGS, [at(0), at(50), at(1), at(49)], None, "openai:e5")
    message = str(refused.value)
    assert "cannot tell these meanings apart" in message and "'refund please' and 'parcel late'" in message
    assert "answer.threshold" in message and "exact_fields" in message


def test_a_threshold_given_with_meanings_is_checked_against_them() -> None:
    vectors = [at(0), at(10), at(70), at(80)]
    assert rule_from(MEANINGS, vectors, 0.9, "m").join == 0.9  # above every different pair: kept
    with pytest.raises(ConfigError, match=r"answer\.threshold 0\.4 would merge different meanings"):
        rule_from(MEANINGS, vectors, 0.4, "m")
    with pytest.raises(ConfigError, match=r"answer\.threshold 0\.999 keeps paraphrases of answer\.meanings apart"):
        rule_from(MEANINGS, vectors, 0.999, "m")


def spec(**answer: object) -> dict[str, object]:
    base = {"format": "text", "match": "semantic", "embeddings": "openai:text-embedding-3-small"}
    return {"name": "t", "initial_state": {}, "prompt": "p", "answer": base | answer, "done": {"steps": 1}}


def test_a_real_embedding_model_needs_meanings_or_a_threshold_and_the_sim_needs_neither() -> None:
    with pytest.raises(SpecError, match=r"answer\.meanings: required when answer\.embeddings is a real model"):
        spec_from_data(spec())
    spec_from_data(spec(threshold=0.8))
    spec_from_data(spec(meanings=[list(MEANINGS[0]), list(MEANINGS[1])]))
    spec_from_data(spec(embeddings="sim"))


@pytest.mark.parametrize(
    ("meanings", "why"),
    [
        ([["a", "b"]], "at least 2 items"),
        ([["a", "a"], ["b", "c"]], "meaning 1 needs two or more different example answers"),
        ([["a", "b"], ["b", "c"]], "'b' is an example of meaning 1 and of meaning 2"),
        ([["a", ""], ["b", "c"]], "meaning 1 needs two or more different"),
    ],
)
def test_bad_meanings_are_refused_saying_what_is_wrong(meanings: list[list[str]], why: str) -> None:
    with pytest.raises(SpecError, match=why):
        spec_from_data(spec(meanings=meanings))


def test_a_run_recorded_before_meanings_were_needed_still_loads_voting_as_it_did() -> None:
    """Workers, `maker status` and the MCP server load stored definitions: one stored without a threshold for a
    real embedding model keeps the default it was started with."""
    stored = {"kind": "spec", "spec": spec()}
    assert SpecTask.from_definition(stored).semantic.threshold == DEFAULT_THRESHOLD
