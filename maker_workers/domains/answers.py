"""Answer parsers for spec tasks: strict red-flag parsing of one response into a vote.

Each parser turns a response into a `Parsed(key, payload)` or raises `RedFlag` with reason `parse`
(no answer in the required form) or `schema` (an answer of the wrong shape). Nothing is repaired:
a response that needs fixing is discarded, because the errors of a repaired answer are correlated.
The vote key is canonical JSON, so formatting (key order, whitespace, indent) never splits votes.

Semantic matching (`SemanticMatch`, answer.match: semantic) says what of a parsed answer is compared by meaning
and what must still match exactly; the worker embeds it and the vote script assigns it to a candidate.

The checks a spec runs at load time (`compile_pattern`, `schema_validator`, `normalize_steps`) live here
too, next to the parsers that rely on them; they raise ValueError with a message meant for the spec's author.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from maker_workers.domains import hanoi
from maker_workers.domains.base import (  # noqa: F401  (SemanticMatch and the defaults: re-exported)
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_THRESHOLD,
    JSON,
    Parsed,
    RedFlag,
    SemanticMatch,
    canonical,
)

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

FORMATS = ("json", "regex", "text", "hanoi")
NORMALIZE_STEPS = ("strip", "collapse", "casefold")  # applied in this order whatever order a spec lists them in

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"\s+")
_BRACES = re.compile(r'"(?:[^"\\]|\\.?)*(?:"|$)|[{}]', re.S)  # a brace, or a JSON string (whose braces are text)


# --- semantic matching -----------------------------------------------------------------------------

MAX_MEANINGS = 32
MAX_MEANING_TEXTS = 256  # examples in all: each is embedded once, before the run starts
MEANINGS_NEEDED = (
    "required when answer.embeddings is a real model ({model}) and answer.threshold is not set: no threshold is "
    "known for it, and a guessed one merges different meanings (on multilingual-e5-small, different meanings score "
    "up to 0.91 and paraphrases as low as 0.81). Give example answers grouped by meaning, e.g. "
    'meanings: [["wants a refund", "asks for the money back"], ["the parcel is late", "delivery is '
    'delayed"]], and the run measures its rule on them before it starts; or set answer.threshold yourself'
)
MEMBERS_KEPT = 2
"""Vectors kept per candidate besides its first answer's: a vote is as near a candidate as it is to the nearest of
them. Bounds the vote script's work per vote at (candidates x (1 + MEMBERS_KEPT)) dot products: every vote
blocks Redis while it compares, about 0.25 ms per stored 1536-dim vector here."""
SIM_EMBEDDING_MODEL = "sim-embed"
EMBEDDING_PROVIDERS = ("openai", "ollama", "sim")


def check_meanings(meanings: Sequence[Sequence[str]]) -> None:
    """answer.meanings: at least two meanings, each with two or more different non-empty example answers."""
    seen: dict[str, int] = {}
    for i, group in enumerate(meanings):
        texts = [text.strip() for text in group]
        if len(set(texts)) < 2 or not all(texts):
            raise ValueError(
                f"meaning {i + 1} needs two or more different example answers (paraphrases of one meaning), "
                f"got {list(group)!r}"
            )
        for text in texts:
            if seen.setdefault(text, i) != i:
                raise ValueError(f"{text!r} is an example of meaning {seen[text] + 1} and of meaning {i + 1}")
    total = sum(len(group) for group in meanings)
    if total > MAX_MEANING_TEXTS:
        raise ValueError(f"{total} example answers; at most {MAX_MEANING_TEXTS} (each is embedded before the run)")


def parse_embeddings(text: str) -> tuple[str, str]:
    """`openai:MODEL`, `ollama:MODEL` or `sim` -> (provider, model); ValueError says what to write."""
    if text == "sim":
        return "sim", SIM_EMBEDDING_MODEL
    provider, _, model = text.partition(":")
    if provider not in EMBEDDING_PROVIDERS or not model.strip():
        raise ValueError(
            f"{text!r} names no embedding model; use openai:MODEL (e.g. openai:text-embedding-3-small), "
            "ollama:MODEL (e.g. ollama:nomic-embed-text) or sim"
        )
    return provider, model.strip()


class AnswerParser(Protocol):
    """What a task's `parse` delegates to: one response in, one vote out (or a RedFlag)."""

    def parse(self, text: str, state: JSON) -> Parsed: ...

    def residue(self, text: str) -> str:
        """What a response says besides its answer (its reasoning): two samples alike in it are copies."""
        ...


# --- load-time checks -----------------------------------------------------------------------------


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a regex answer pattern; it must name the parts a vote is about."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    if not compiled.groupindex:
        raise ValueError(
            "the pattern has no named group; name the parts the vote is about, e.g. 'Answer: (?P<answer>\\w+)'"
        )
    return compiled


def schema_validator(schema: Any) -> Validator:
    """A ready validator for a JSON Schema, built once; a schema that is not a schema is an error now."""
    from jsonschema import exceptions as schema_exceptions  # here: a tenth of a second that only schemas need
    from jsonschema import validators as schema_validators

    if not isinstance(schema, dict | bool):
        raise ValueError(f"not a JSON Schema: must be an object (or true/false), got {type(schema).__name__}")
    cls = schema_validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except schema_exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValueError(f"not a JSON Schema: {exc.message}" + (f" (at {where})" if where else "")) from exc
    return cls(schema)


def normalize_steps(normalize: bool | Sequence[str]) -> tuple[str, ...]:
    """The normalisation steps named by a spec's `answer.normalize` (true: all of them)."""
    if normalize is True:
        return NORMALIZE_STEPS
    if normalize is False:
        return ()
    if isinstance(normalize, list | tuple) and all(isinstance(s, str) for s in normalize):
        unknown = [s for s in normalize if s not in NORMALIZE_STEPS]
        if unknown:
            raise ValueError(f"unknown step {unknown[0]!r}; use true, false or a list of {', '.join(NORMALIZE_STEPS)}")
        return tuple(s for s in NORMALIZE_STEPS if s in normalize)
    raise ValueError(f"use true, false or a list of {', '.join(NORMALIZE_STEPS)}")


# --- parsers --------------------------------------------------------------------------------------


def _scan_objects(text: str) -> list[tuple[int, int, dict[str, Any]]]:
    """Every top-level JSON object in `text`, in order, with where it starts and ends.

    At each '{' try to decode; on success jump past the object, so braces inside it (strings, nested
    objects) are never mistaken for the start of another one.
    """
    found: list[tuple[int, int, dict[str, Any]]] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        except RecursionError:  # nested past what the decoder can follow: nothing an answer needs
            raise RedFlag("parse", "the answer's JSON is nested too deeply") from None
        found.append((pos, end, obj))
        pos = text.find("{", end)
    return found


def _leaves_open(prose: str) -> bool:
    """Whether `prose` leaves a '{' unclosed (braces inside JSON strings aside): an object after it is then
    a piece of something that failed to decode (`{"a": {"answer": 7}`, an outer object whose number is too
    long to read), not an answer of its own."""
    depth = 0
    for token in _BRACES.findall(prose):
        if token == "{":
            depth += 1
        elif token == "}":
            depth = max(0, depth - 1)
    return depth > 0


class _DuplicateKey(Exception):
    """A key written twice in one object (the key is args[0])."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        names = [name for name, _ in pairs]
        raise _DuplicateKey(next(name for i, name in enumerate(names) if name in names[:i]))
    return obj


# Decodes the chosen answer once more, refusing a key written twice: json keeps the last silently.
_UNIQUE_KEYS = json.JSONDecoder(object_pairs_hook=_unique_pairs)


def _finite(obj: Any) -> bool:
    # raw_decode accepts NaN and Infinity, which are not JSON: re-encoding strictly finds them.
    try:
        json.dumps(obj, allow_nan=False)
    except ValueError:
        return False
    return True


def last_json_object(text: str) -> dict[str, Any]:
    """The last top-level JSON object in a response (prose, code fences and earlier drafts around it are fine)."""
    found = _scan_objects(text)
    if not found:
        raise RedFlag("parse", "no JSON object in the response")
    start, end, last = found[-1]
    if _leaves_open(text[found[-2][1] if len(found) > 1 else 0 : start]):
        raise RedFlag("parse", "the last JSON object is inside a '{' that is never closed")
    if not _finite(last):
        raise RedFlag("parse", "the last JSON object holds NaN or Infinity, which JSON does not allow")
    try:
        _UNIQUE_KEYS.raw_decode(text[start:end])
    except _DuplicateKey as exc:
        raise RedFlag("parse", f"the last JSON object has the key {exc.args[0]!r} twice") from None
    return last


def _parsed(key: str, payload: JSON) -> Parsed:
    """The vote, unless it holds a lone surrogate (a JSON escape like \\ud800 can carry one): that is not
    text, and Redis could not store the vote."""
    try:
        key.encode()
        canonical(payload).encode()
    except UnicodeEncodeError:
        raise RedFlag("parse", "the answer holds a lone surrogate, which is not text") from None
    return Parsed(key, payload)


def vote_key(payload: dict[str, Any], vote_on: Sequence[str] | None) -> str:
    """The canonical key of the fields a vote is about; a missing field is a `schema` red flag."""
    if vote_on is None:
        return canonical(payload)
    missing = [f for f in vote_on if f not in payload]
    if missing:
        raise RedFlag("schema", f"the answer lacks the field {missing[0]!r}")
    return canonical({f: payload[f] for f in vote_on})


class JsonAnswer:
    """The last JSON object in the response, optionally checked against a JSON Schema."""

    def __init__(self, schema: Any = None, vote_on: Sequence[str] | None = None) -> None:
        self.validator = None if schema is None else schema_validator(schema)
        self.vote_on = None if vote_on is None else tuple(vote_on)

    def parse(self, text: str, state: JSON) -> Parsed:
        payload = last_json_object(text)
        if self.validator is not None:
            from jsonschema.exceptions import best_match  # loaded by schema_validator already

            error = best_match(self.validator.iter_errors(payload))
            if error is not None:
                raise RedFlag("schema", f"{error.message} (at {error.json_path})")
        return _parsed(vote_key(payload, self.vote_on), payload)

    def residue(self, text: str) -> str:
        found = _scan_objects(text)
        return text[: found[-1][0]] + text[found[-1][1] :] if found else text


class RegexAnswer:
    """The last line the pattern matches whole (leading and trailing spaces aside); the payload is the match's groups
    by name. A pattern found only inside a longer line (`TOTAL: 1857 + 250 = 2107` for `TOTAL:\\s*(?P<total>\\d+)`)
    is a red flag: reading 1857 out of it would repair the answer by accident. `whole_line=False` takes the last
    match anywhere instead.

    A digit other than 0-9 in a group is a red flag: `\\d` matches '٣' and '３' too, which no later step
    reads as the number it looks like.
    """

    def __init__(self, pattern: str, vote_on: Sequence[str] | None = None, whole_line: bool = True) -> None:
        self.pattern = compile_pattern(pattern)
        self.vote_on = None if vote_on is None else tuple(vote_on)
        self.whole_line = whole_line
        unknown = [f for f in self.vote_on or () if f not in self.pattern.groupindex]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a named group of the pattern")

    def _last(self, text: str) -> re.Match[str]:
        if not self.whole_line:
            last = deque(self.pattern.finditer(text), maxlen=1)  # only the last match counts
            if not last:
                raise RedFlag("parse", "no match of the answer pattern in the response")
            return last[0]
        lines = deque((m for m in map(self.pattern.fullmatch, map(str.strip, text.splitlines())) if m), maxlen=1)
        if lines:
            return lines[0]
        inside = deque(self.pattern.finditer(text), maxlen=1)
        if inside:
            start = text.rfind("\n", 0, inside[0].start()) + 1
            end = text.find("\n", inside[0].end())
            line = text[start : end if end >= 0 else len(text)].strip()
            shown = line if len(line) <= 120 else f"{line[:117]}..."
            raise RedFlag(
                "parse", f"the answer pattern matches only part of the line {shown!r}: it must match a line whole"
            )
        raise RedFlag("parse", "no line of the response matches the answer pattern")

    def residue(self, text: str) -> str:
        if not self.whole_line:
            last = deque(self.pattern.finditer(text), maxlen=1)
            return text[: last[0].start()] + text[last[0].end() :] if last else text
        lines = text.splitlines()
        matching = [i for i, line in enumerate(lines) if self.pattern.fullmatch(line.strip())]
        return "\n".join(lines[: matching[-1]] + lines[matching[-1] + 1 :]) if matching else text

    def parse(self, text: str, state: JSON) -> Parsed:
        payload = self._last(text).groupdict()
        if any(char.isdecimal() and not char.isascii() for value in payload.values() if value for char in value):
            raise RedFlag("parse", "the answer writes a digit other than 0-9")
        return _parsed(vote_key(payload, self.vote_on), payload)


class TextAnswer:
    """The whole response, normalised so that trivial differences (spacing, case) are one vote."""

    def __init__(self, normalize: bool | Sequence[str] = True) -> None:
        self.steps = normalize_steps(normalize)

    def normalize(self, text: str) -> str:
        if "strip" in self.steps:
            text = text.strip()
        if "collapse" in self.steps:
            text = _WHITESPACE.sub(" ", text)
        if "casefold" in self.steps:
            text = text.casefold()
        return text

    def residue(self, text: str) -> str:
        return ""  # the answer is the whole text

    def parse(self, text: str, state: JSON) -> Parsed:
        answer = self.normalize(text)
        if not answer:
            raise RedFlag("parse", "the response is empty")
        return _parsed(canonical(answer), answer)


class HanoiAnswer:
    """The Towers of Hanoi strict parser; `state` is the current pegs, which give the number of disks."""

    def residue(self, text: str) -> str:
        return hanoi.residue(text)

    def parse(self, text: str, state: JSON) -> Parsed:
        # Without a state (a one-off `maker vote`), the answer's own next_state says how many disks there are.
        disks = hanoi.disks_of(state) if state is not None else hanoi.disks_in(text)
        move, next_state = hanoi.parse(text, disks)
        payload = {"move": list(move), "next_state": next_state}
        return Parsed(canonical(payload), payload)


class _AnswerOptions(Protocol):
    """What `key_of` reads of a spec's `answer` (spec.AnswerSpec)."""

    format: str
    vote_on: list[str] | None


def key_of(answer: _AnswerOptions, payload: JSON) -> str:
    """The vote key the parsers give an answer whose payload is `payload` (a reference run's winning answer,
    say): json and regex vote on the `vote_on` fields (or all), text and hanoi on the whole payload, which
    the text parser has already normalised."""
    if answer.format in ("json", "regex"):
        if not isinstance(payload, dict):
            raise RedFlag("schema", f"a {answer.format} answer is an object, got {type(payload).__name__}")
        return vote_key(payload, answer.vote_on)
    return canonical(payload)
