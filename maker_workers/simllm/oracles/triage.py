"""Support-ticket triage with a free-text reason: the task whose right answers come in many phrasings.

Reads a `Ticket:` line naming one of the issues below; the answer is the JSON object
{"queue": ..., "reason": "<one sentence>"}. Every reason is one of a few meanings, each written in hundreds
of surface forms (sentence frames times synonyms), so two right answers rarely spell the reason alike:
exact matching cannot reach a margin, matching by meaning can. `simllm.embed` reads the same phrase
tables, so paraphrases of one meaning embed close together and different meanings far apart.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

from maker_workers.simllm.oracles.base import FILLER, Oracle

QUEUES = ("billing", "account", "shipping", "outage", "security")

# A meaning is a sequence of slots; each slot lists phrases that say the same thing.
_WHO = ["the customer", "the client", "the user", "this customer", "the account holder"]
MEANINGS: dict[str, list[list[str]]] = {
    "double_charge": [
        _WHO,
        ["was charged", "was billed", "got charged", "has been billed", "was debited"],
        ["twice", "two times", "double", "a second time"],
        ["for one order", "for a single order", "for the same purchase", "for one purchase"],
    ],
    "reset_email": [
        _WHO,
        ["never receives", "does not get", "is not receiving", "never gets"],
        ["the password reset email", "the reset link", "the password recovery message", "the reset mail"],
        ["and cannot sign in", "so they are locked out", "and cannot log in", "and is locked out"],
    ],
    "lost_parcel": [
        _WHO,
        ["has a parcel", "has a package", "has a shipment", "is waiting on a delivery"],
        ["stuck in transit", "that never arrived", "lost in transit", "that has not been delivered"],
        ["for weeks", "for three weeks", "for a long time", "for many days"],
    ],
    "site_down": [
        ["the checkout page", "the checkout", "the payment page", "the site checkout"],
        ["returns server errors", "is failing with 503", "is down", "returns 503 errors"],
        ["for everyone", "for all users", "for every visitor", "across the board"],
    ],
    "foreign_login": [
        ["someone", "an unknown person", "a stranger", "an unrecognised party"],
        ["signed in to", "logged into", "accessed", "got into"],
        ["the account", "this account", "the customer's account", "their account"],
        ["from abroad", "from a foreign country", "from an unfamiliar country", "from another country"],
    ],
    "missing_refund": [
        _WHO,
        ["returned an item", "sent back a product", "returned the goods", "sent the item back"],
        ["but the refund never came", "but was not refunded", "but the refund is missing", "yet got no refund"],
    ],
}
_FRAMES = ("{} {} {} {}.", "{3}, {0} {1} {2}.", "Reason: {} {} {} {}.", "It seems {} {} {} {}.")
_FRAMES_3 = ("{} {} {}.", "{2}, {0} {1}.", "Reason: {} {} {}.", "It seems {} {} {}.")


@dataclass(frozen=True)
class Issue:
    cue: str  # a phrase of the ticket that names the issue
    queue: str
    reason: str
    mistake_queue: str  # the plausible misrouting
    mistake_reason: str  # the misreading behind it
    corrupt_reason: str  # the right queue for a wrong reason


ISSUES = (
    Issue("charged twice", "billing", "double_charge", "account", "foreign_login", "missing_refund"),
    Issue("reset email", "account", "reset_email", "security", "foreign_login", "site_down"),
    Issue("in transit", "shipping", "lost_parcel", "billing", "missing_refund", "double_charge"),
    Issue("error 503", "outage", "site_down", "billing", "double_charge", "reset_email"),
    Issue("from a country", "security", "foreign_login", "account", "reset_email", "lost_parcel"),
    Issue("refund", "billing", "missing_refund", "shipping", "lost_parcel", "double_charge"),
)

Answer = tuple[str, str]  # (queue, meaning of the reason)

_TICKET = re.compile(r"^Ticket:\s*(.+?)\s*$", re.M)


def phrase(meaning: str, rng: random.Random) -> str:
    """One surface form of a meaning: a frame, and a synonym for each slot."""
    slots = [rng.choice(options) for options in MEANINGS[meaning]]
    text = rng.choice(_FRAMES if len(slots) == 4 else _FRAMES_3).format(*slots)
    return text[0].upper() + text[1:]


@dataclass
class TriageProblem:
    issue: Issue
    deceptive: bool = False  # SimConfig.deceptive: wrong answers give the right reason, with a wrong queue
    filler: str = FILLER
    _words: random.Random = field(default_factory=random.Random)  # reseeded per answer by right()

    def right(self, rng: random.Random) -> Answer:
        self._words = random.Random(rng.getrandbits(64))  # so the phrasing follows the answer's own draws
        return self.issue.queue, self.issue.reason

    def mistake(self) -> Answer | None:
        return self.issue.mistake_queue, self.issue.reason if self.deceptive else self.issue.mistake_reason

    def corrupt(self, right: Answer) -> Answer:
        return right[0], self.issue.corrupt_reason

    def other(self, right: Answer, mistake: Answer | None, rng: random.Random) -> Answer:
        queue = rng.choice([q for q in QUEUES if q not in (right[0], mistake and mistake[0])])
        return queue, self.issue.reason if self.deceptive else rng.choice(sorted(MEANINGS))

    def render(self, answer: Answer) -> str:
        queue, meaning = answer
        reason = phrase(meaning, self._words)
        return f"This ticket belongs with {queue}.\n" + json.dumps({"queue": queue, "reason": reason})

    def malformed(self, answer: Answer, rng: random.Random) -> str:
        queue, meaning = answer
        return rng.choice(
            [
                json.dumps({"queue": queue}),
                json.dumps({"queue": queue, "reason": phrase(meaning, rng)})[:-1],
                f"Route it to {queue}: {phrase(meaning, rng)}",
            ]
        )


def read(prompt: str) -> TriageProblem | None:
    tickets = _TICKET.findall(prompt)
    if not tickets:
        return None
    ticket = tickets[-1].lower()
    issue = next((issue for issue in ISSUES if issue.cue in ticket), None)
    if issue is None:
        cues = ", ".join(repr(issue.cue) for issue in ISSUES)
        raise ValueError(f"a ticket the simulated model does not know; it knows tickets mentioning {cues}")
    return TriageProblem(issue)


ORACLE = Oracle("triage", "a 'Ticket:' line about a known issue", read)
