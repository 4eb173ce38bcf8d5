"""The simulated model's embeddings: deterministic, and shaped like a real model's where votes need it.

A text is a bag of concepts plus its surface words. Words are read through the phrase tables of the tasks
whose answers come in many phrasings (oracles.triage), where every synonym of a slot stands for the slot's
one concept; other words are concepts of their own. Each concept and each surface word is a fixed random
direction (seeded by its name), so paraphrases of one meaning share every concept and land close together,
and different meanings share few and land far apart. The surface words keep paraphrases from being equal.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from functools import lru_cache

from maker_workers.simllm.oracles.triage import MEANINGS

DIM = 256
SURFACE_WEIGHT = 0.3  # how much the exact words count beside their concepts
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "their",
        "they",
        "this",
        "to",
        "was",
        "were",
        "with",
        "yet",
        "reason",
        "seems",
    }
)
_WORD = re.compile(r"[a-z0-9']+")


def _lexicon() -> dict[str, str | None]:
    """Every word of a phrase table -> the concept of its slot (named by the slot's first phrase); None for a
    word found in slots of different concepts ("never", "got"), which says nothing of the meaning alone."""
    words: dict[str, str | None] = {}
    for slots in MEANINGS.values():
        for options in slots:
            for option in options:
                for word in _WORD.findall(option.lower()):
                    if word not in STOPWORDS:
                        words[word] = options[0] if words.get(word, options[0]) == options[0] else None
    return words


_LEXICON = _lexicon()


@lru_cache(maxsize=4096)
def _direction(name: str) -> tuple[float, ...]:
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    return tuple(rng.gauss(0.0, 1.0) / math.sqrt(DIM) for _ in range(DIM))


def embed(text: str) -> list[float]:
    """The text's unit vector (a text with no words gets a fixed one of its own)."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS] or [""]
    concepts = {_LEXICON.get(w, w) for w in words} - {None}
    parts = [(f"concept:{concept}", 1.0) for concept in sorted(c for c in concepts if c is not None)]
    parts += [(f"word:{word}", SURFACE_WEIGHT) for word in sorted(set(words))]
    vector = [0.0] * DIM
    for name, weight in parts:
        for i, x in enumerate(_direction(name)):
            vector[i] += weight * x
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]
