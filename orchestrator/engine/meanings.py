"""The join rule of a vote on meaning, measured on the embedding model in use before a run starts.

A real embedding model puts every sentence of one topic close together: on multilingual-e5-small, paraphrases
of one meaning score as low as 0.81 while different meanings reach 0.91. No fixed threshold is safe for every
model, so a spec gives example answers grouped by meaning (answer.meanings); a worker embeds them, and the rule
is read off the examples:

- one threshold separates them (every paraphrase pair above every pair of different meanings): votes join at
  the midpoint;
- they overlap: a vote joins a candidate only above the highest similarity of different meanings (`join`),
  opens one only below the lowest of paraphrases (`open_below`), and in between is thrown as `ambiguous_meaning`,
  so nothing the examples call different is ever merged; refused when too few paraphrases would join.

The rule is stored with the run (meta `semantic_rule`), so a resumed run votes by the same one.
"""

from __future__ import annotations

import itertools
import json
import math
import uuid
from typing import TYPE_CHECKING

from pydantic import BaseModel

from maker_workers.celery_app import EMBED_EXAMPLES_TASK
from maker_workers.connections import never_twice
from maker_workers.domains.answers import SemanticMatch
from maker_workers.errors import ConfigError, store_errors
from maker_workers.semantic import unit

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from orchestrator.engine.store import RunStore

MEASURE_S = 120.0  # the first embedding call may load the model
MARGIN = 0.002  # beyond the examples' extremes: a new phrasing may lie a little past them
LEAST_JOINED = 0.5  # fewer paraphrase pairs joining than this: the votes would be mostly thrown


class MeaningsRule(BaseModel):
    """What the examples measured, and the rule the run's votes follow."""

    join: float  # a vote at least this similar to a candidate joins it
    open_below: float  # a vote less similar than this to every candidate opens one
    same_min: float  # the least alike two paraphrases of one meaning are
    same_pair: tuple[str, str]
    other_max: float  # the most alike two different meanings are
    other_pair: tuple[str, str]
    joined_share: float  # of the paraphrase pairs, the share at or above `join`
    examples: int

    def describe(self) -> str:
        if self.join == self.open_below:
            return f"one threshold separates the meanings: votes join at {self.join:.3f}"
        return (
            f"votes join a candidate at {self.join:.3f} or more, open one below {self.open_below:.3f}, and between "
            f"are thrown as ambiguous ({self.joined_share:.0%} of the examples' paraphrase pairs join)"
        )


def _unit(vector: list[float]) -> list[float]:
    try:
        return unit(vector)
    except ValueError as exc:
        raise ConfigError(f"answer.meanings: an example's embedding has no direction: {exc}") from None


def rule_from(
    meanings: tuple[tuple[str, ...], ...], vectors: list[list[float]], threshold: float | None, model: str
) -> MeaningsRule:
    """The rule for these examples' vectors (in the order of `meanings`, group by group); ConfigError when no
    rule tells the meanings apart, or when a threshold the spec sets would merge two of them."""
    labelled = [(text, i) for i, group in enumerate(meanings) for text in group]
    units = [_unit(v) for v in vectors]
    same: list[tuple[float, str, str]] = []
    other: list[tuple[float, str, str]] = []
    for (a, (text_a, group_a)), (b, (text_b, group_b)) in itertools.combinations(enumerate(labelled), 2):
        similarity = math.fsum(x * y for x, y in zip(units[a], units[b], strict=True))
        (same if group_a == group_b else other).append((similarity, text_a, text_b))
    low, high = min(same), max(other)
    where = (
        f"on {model}: paraphrases {low[1]!r} and {low[2]!r} are {low[0]:.3f} alike, "
        f"different meanings {high[1]!r} and {high[2]!r} {high[0]:.3f}"
    )
    if threshold is not None:
        if threshold <= high[0]:
            raise ConfigError(
                f"answer.threshold {threshold} would merge different meanings of answer.meanings ({where}): "
                "leave answer.threshold out and the run measures its rule on the examples"
            )
        join = opens = threshold
    elif low[0] > high[0]:
        join = opens = round((low[0] + high[0]) / 2, 4)
    else:
        join, opens = min(high[0] + MARGIN, 0.999), low[0] - MARGIN
    joined = sum(1 for s, _, _ in same if s >= join) / len(same)
    if joined < LEAST_JOINED and threshold is not None:
        raise ConfigError(
            f"answer.threshold {threshold} keeps paraphrases of answer.meanings apart ({where}): only {joined:.0%} "
            "of the paraphrase pairs reach it, so votes of one meaning would split; leave answer.threshold out and "
            "the run measures its rule on the examples"
        )
    if joined < LEAST_JOINED:
        raise ConfigError(
            f"answer.meanings: the embedding model cannot tell these meanings apart ({where}); a vote would have to "
            f"be {join:.3f} alike to join, which only {joined:.0%} of the paraphrase pairs are. Use a stronger "
            "embedding model, let exact_fields carry what must match, give examples that differ more, or set "
            "answer.threshold to accept that different meanings may merge"
        )
    return MeaningsRule(
        join=join,
        open_below=opens,
        same_min=round(low[0], 6),
        same_pair=(low[1], low[2]),
        other_max=round(high[0], 6),
        other_pair=(high[1], high[2]),
        joined_share=round(joined, 4),
        examples=len(labelled),
    )


def measure(client: redis.Redis, broker: Celery, semantic: SemanticMatch, timeout_s: float = MEASURE_S) -> MeaningsRule:
    """Has a worker embed the examples with the run's own embedding model, and reads the rule off them."""
    reply = f"maker:reply:{uuid.uuid4().hex}"
    texts = [text for group in semantic.meanings for text in group]
    request = {
        "embeddings": semantic.embeddings,
        "base_url": semantic.embeddings_base_url,
        "texts": texts,
        "reply": reply,
    }
    broker.send_task(EMBED_EXAMPLES_TASK, args=[request])
    with store_errors("waiting for the examples' embeddings"):
        got = never_twice(client, socket_timeout=timeout_s + 10).blpop([reply], timeout=timeout_s)
    if got is None:
        raise ConfigError(
            f"answer.meanings: no worker embedded the {len(texts)} example answers within {timeout_s:.0f} s: are "
            "workers running and reaching the embedding model? (`maker status` lists the workers)"
        )
    answer = json.loads(got[1])
    if "error" in answer:
        raise ConfigError(f"answer.meanings: embedding the example answers failed: {answer['error']}")
    threshold = semantic.threshold if semantic.threshold_set else None
    return rule_from(semantic.meanings, answer["vectors"], threshold, semantic.embeddings)


def rule_to_measure(
    store: RunStore, client: redis.Redis, broker: Celery, semantic: SemanticMatch | None
) -> MeaningsRule | None:
    """The rule a run starting now must record (store.set_semantic_rule), measured on its answer.meanings; None when
    it has none, or already has its rule (a resumed run votes by the one it began with)."""
    if semantic is None or not semantic.meanings or store.semantic_rule() is not None:
        return None
    return measure(client, broker, semantic)
