"""Validated text preference records, the common output of every reader of real data.

A reader turns one format (Reddit TL;DR, PRISM, generic pairs, per-user ratings) into
:class:`PreferenceRecord`s. Malformed input raises :class:`RecordError` naming the file, the
line and the field. Records that are well-formed but cannot make a pair (identical texts,
empty text, no choice, a duplicate of an earlier one) are dropped and counted in a
:class:`LoadSummary`, never a crash; so are users none of whose lines made a pair.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAIN_SPLIT, TEST_SPLIT = "train", "test"


@dataclass(frozen=True)
class PreferenceRecord:
    """One judgement: ``user`` preferred ``chosen`` over ``rejected`` as answers to ``prompt``.

    Attributes:
        history: earlier turns of a multi-turn conversation as ``(role, content)`` with role
            ``"user"`` or ``"assistant"``; ``prompt`` is the last user message. Empty for
            single-turn data.
        unit: what splits keep whole (a post id, a conversation id); texts sharing a unit
            never land on both sides of a split.
        split: ``"train"`` / ``"test"`` where the source assigns one (the paper's TL;DR
            protocol uses the release's own splits), else None.
        origin: ``file:line`` it came from, for error messages and audits.
    """

    user: str
    prompt: str
    chosen: str
    rejected: str
    unit: str
    split: str | None = None
    origin: str = ""
    history: tuple[tuple[str, str], ...] = ()


class RecordError(ValueError):
    """Malformed input: the message names the file, the line (or record) and the field."""

    def __init__(self, path: str | Path, line: int | str, field_name: str, problem: str) -> None:
        super().__init__(f"{path}:{line}: field {field_name!r}: {problem}")
        self.path, self.line, self.field_name, self.problem = str(path), line, field_name, problem


DUPLICATE_PAIR = "duplicate pair"


@dataclass
class LoadSummary:
    """What loading kept and dropped, and why; printed at the end of loading.

    Attributes:
        kept: pairs kept.
        dropped: lines or pairs dropped, by reason.
        paired: users with at least one pair kept.
        unpaired: users read with no pair (yet), and why; a user paired by another file of
            the same source is not counted (see :meth:`users_without_pairs`).
    """

    source: str
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    paired: set[str] = field(default_factory=set)
    unpaired: dict[str, str] = field(default_factory=dict)

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] += count

    def users(self, paired: set[str], unpaired: dict[str, str]) -> None:
        """Record a file's users with pairs, and those with none (user -> why)."""
        self.paired |= paired
        for user, reason in unpaired.items():
            self.unpaired.setdefault(user, reason)

    def users_without_pairs(self) -> Counter:
        """How many users made no pair at all, by reason."""
        return Counter(r for user, r in self.unpaired.items() if user not in self.paired)

    def reasons(self) -> str:
        """The drops on one line, for an error saying why nothing was kept."""
        parts = [f"{n} ({reason})" for reason, n in sorted(self.dropped.items())]
        return "dropped " + ", ".join(parts) if parts else "it holds no pairs"

    def __str__(self) -> str:
        lines = [f"{self.source}: kept {self.kept} pairs"]
        lines += [f"  dropped {n} ({reason})" for reason, n in sorted(self.dropped.items())]
        without = sorted(self.users_without_pairs().items())
        lines += [f"  users with no pair: {n} ({reason})" for reason, n in without]
        return "\n".join(lines)


def drop_duplicates(
    records: list[PreferenceRecord], summary: LoadSummary
) -> list[PreferenceRecord]:
    """``records`` without repeats of an earlier (user, history, prompt, chosen, rejected),
    counted in ``summary`` as ``duplicate pair``: the same judgement twice would weigh double
    (and could put one pair on both sides of a split)."""
    seen: set[tuple] = set()
    kept = []
    for record in records:
        key = (record.user, record.history, record.prompt, record.chosen, record.rejected)
        if key not in seen:
            seen.add(key)
            kept.append(record)
    if len(kept) < len(records):
        summary.drop(DUPLICATE_PAIR, len(records) - len(kept))
    return kept


def pair_or_drop_reason(chosen: str, rejected: str) -> str | None:
    """None if the texts make a usable pair, else the reason to drop it."""
    if not chosen.strip() or not rejected.strip():
        return "empty response text"
    if chosen.strip() == rejected.strip():
        return "identical chosen and rejected"
    return None


def read_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, object)`` for each non-blank line. Bad JSON, text that is not UTF-8,
    numbers too long for Python and nesting too deep are RecordErrors naming the file and line."""
    with open(path, encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except (ValueError, RecursionError) as error:  # ValueError: JSONDecodeError too
                    raise RecordError(path, number, "<json>", _json_problem(error)) from None
                if not isinstance(value, dict):
                    raise RecordError(path, number, "<json>", "expected a JSON object")
                yield number, value
        except UnicodeDecodeError as error:
            raise not_utf8(path, error) from None


def _json_problem(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg})"
    if isinstance(error, RecursionError):
        return "not valid JSON (nested too deeply)"
    return f"not valid JSON ({str(error).split(';')[0]})"  # Exceeds the limit (4300 digits)...


def not_utf8(path: str | Path, error: UnicodeDecodeError) -> RecordError:
    """The line of the first byte that is not UTF-8 (files are decoded in chunks, so
    ``error`` alone does not tell)."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
        start = error.start  # not reached: the file decoded once already failed
    except UnicodeDecodeError as exact:
        start = exact.start
    byte = data[start : start + 1].hex()
    return RecordError(path, data.count(b"\n", 0, start) + 1, "<encoding>", f"not UTF-8 (0x{byte})")


def require(
    obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str | Path, line: int | str
) -> Any:
    """``obj[key]`` checked for presence and type, else a RecordError naming the field."""
    if key not in obj or obj[key] is None:
        raise RecordError(path, line, key, "missing")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in _as_tuple(kind):
        names = "/".join(k.__name__ for k in _as_tuple(kind))
        raise RecordError(path, line, key, f"expected {names}, got {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
