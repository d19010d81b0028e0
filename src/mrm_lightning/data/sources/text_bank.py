"""The texts of the built-in toy text population: prompts and their 32 responses each.

A small hand-written bank of everyday prompts; each prompt gets one response for every
combination of five readable attributes, all built from the same content:

    long     the answer plus "Here is why: ..." and "One more tip: ..." (else one sentence)
    formal   formal openers, closers and numbered lists (else casual ones and contractions)
    example  a closing "For example, ..." sentence
    warm     a friendly opener and closer (else a curt one, or none)
    bullets  the answer as a list of three points

Pure data and pure functions; the users who judge these texts are in
:mod:`mrm_lightning.data.sources.text_population`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from typing import NamedTuple


class Attributes(NamedTuple):
    """What a response has; bit i of an attribute code is field i."""

    long: bool = False
    formal: bool = False
    example: bool = False
    warm: bool = False
    bullets: bool = False

    @classmethod
    def from_code(cls, code: int) -> Attributes:
        return cls(*(bool(code >> i & 1) for i in range(len(cls._fields))))


BANK_FILE = "text_bank.txt"  # the prompts and their content, package data beside this file
ATTRIBUTES = Attributes._fields
ALL_ATTRIBUTES = [Attributes.from_code(code) for code in range(2 ** len(ATTRIBUTES))]


# (opener, closer) by (warm, formal); a response uses variant (prompt index + code) % 3.
WRAPPERS: dict[tuple[bool, bool], tuple[tuple[str, str], ...]] = {
    (True, False): (
        ("Ooh, fun one!", "Have fun with it!"),
        ("Happy to help with this!", "You have got this!"),
        ("Love this question!", "Hope that helps, enjoy!"),
    ),
    (True, True): (
        ("Thank you for your question; I would be glad to help.", "I wish you all the best."),
        (
            "What a thoughtful question. It is my pleasure to assist.",
            "Please do not hesitate to ask if you would like further assistance.",
        ),
        ("I appreciate you asking, and I am happy to help.", "Kind regards and best wishes."),
    ),
    (False, False): (("Eh, easy.", "That is it."), ("Okay.", "Done."), ("Right, so.", "Whatever.")),
    (False, True): (
        ("The answer is as follows.", ""),
        ("Response:", "No further detail is required."),
        ("", "That is all."),
    ),
}

CONTRACTIONS = [
    (re.compile(rf"\b{long}\b"), short)
    for long, short in (
        ("I would", "I'd"),
        ("I am", "I'm"),
        ("It is", "It's"),
        ("it is", "it's"),
        ("do not", "don't"),
        ("does not", "doesn't"),
        ("is not", "isn't"),
        ("cannot", "can't"),
        ("will not", "won't"),
        ("you will", "you'll"),
        ("you are", "you're"),
        ("you have", "you've"),
        ("You have", "You've"),
        ("they are", "they're"),
        ("that is", "that's"),
        ("That is", "That's"),
    )
]


@dataclass(frozen=True)
class Topic:
    """One prompt's content: the answer, two more sentences, an example and three points."""

    prompt: str
    answer: str
    more: str
    example: str
    points: tuple[str, str, str]


def elaborate(more: str) -> str:
    """The two sentences of a long answer, with the signposts of one: why, then one more tip."""
    reason, tip = re.split(r"(?<=[.!?]) ", more, maxsplit=1)
    return f"Here is why: {reason} One more tip: {tip}"


def render(topic: Topic, attributes: Attributes, variant: int = 0) -> str:
    """The response to ``topic.prompt`` that has ``attributes`` (``variant`` picks the wording
    of its opener and closer)."""
    long, formal, example, warm, bullets = attributes
    opener, closer = WRAPPERS[(warm, formal)][variant % 3]
    if bullets:
        lead = "The main points are as follows:" if formal else "Quick rundown:"
        marks = [
            f"{i}. {p[0].upper()}{p[1:]}." if formal else f"- {p}"
            for i, p in enumerate(topic.points, start=1)
        ]
        body = "\n".join([lead, *marks]) + ("\n" + elaborate(topic.more) if long else "")
    else:
        body = topic.answer + (" " + elaborate(topic.more) if long else "")
    if example:
        body += ("\n" if bullets else " ") + ("For example, " if formal else "Quick example: ")
        body += topic.example
    text = " ".join(part for part in (opener, body, closer) if part)
    if not formal:
        for pattern, short in CONTRACTIONS:
            text = pattern.sub(short, text)
    return text


def parse_topics(bank: str) -> list[Topic]:
    """Blocks of ``Q:`` prompt, ``A:`` answer, ``M:`` more, ``E:`` example, ``P:`` points
    (``;``-separated); a repeated key continues its field; blank lines separate topics; lines
    starting with ``#`` are comments."""
    topics = []
    lines = [line for line in bank.splitlines() if not line.startswith("#")]
    for block in "\n".join(lines).strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.strip().splitlines():
            key, value = line[0], line[2:].strip()
            fields[key] = f"{fields[key]} {value}" if key in fields else value
        points = tuple(p.strip() for p in fields["P"].split(";"))
        topics.append(Topic(fields["Q"], fields["A"], fields["M"], fields["E"], points))
    return topics


TOPICS = parse_topics(files(__package__).joinpath(BANK_FILE).read_text(encoding="utf-8"))
