"""Readers of users' own data: preference pairs, and per-user ratings turned into pairs.

Both formats are JSON lines (``.jsonl`` or ``.json``, one object per line) or CSV (``.csv``, read
with the :mod:`csv` module, header row required); the fields are the same in both.

**Pairs** (:func:`read_pairs`), one judgement per line::

    {"user_id": "u1", "prompt": "...", "chosen": "...", "rejected": "...", "split": "train"}

- ``user_id`` (a string, or a JSON number turned into one), ``prompt``, ``chosen``, ``rejected``:
  required.
- ``split``: optional, ``train`` or ``test`` (any case); empty or absent means none assigned.
- ``unit``: optional, what splits keep whole; absent means the prompt text, so pairs about one
  prompt stay on one side of a split (pairs with an empty prompt should carry a unit).

**Ratings** (:func:`read_ratings`), one scored text per line::

    {"user_id": "u1", "prompt": "...", "text": "...", "score": 4}

- ``user_id``, ``text`` and ``score`` (a number, or a string holding one) required; ``prompt``
  optional.
- Pairs are formed within one user from two items with different scores, the higher-scored one
  chosen; equal scores make no pair. Items with an empty text are dropped and counted.
- With a prompt, only responses to the same prompt pair up; unit = the prompt. Without one,
  every distinct text falls in one of ``item_groups`` groups by a seeded hash of the text,
  the same group for every user who rated it, and only a user's items of one group pair up;
  unit = ``"group{k}"``. A unit is therefore a set of texts shared by all users, and the data
  module's split puts it on one side for everybody: no rated text is in one user's training
  pairs and another's test pairs. Units that still share a text (one answer rated under two
  prompts, by any users of the file) are merged under the name of the first. More groups give
  finer splits but fewer pairs (a user with n items gets about n^2 / (2 * item_groups)).
- Each user keeps at most ``max_pairs_per_user`` pairs, a seeded random sample in file order.
- Randomness: groups hash ``f"{seed}/{text}"`` with SHA-256; the cap's sample uses one
  ``random.Random(f"{seed}/{user}")`` per user (string seeds are hashed with SHA-512,
  independent of ``PYTHONHASHSEED``).
- ``origin`` of a rating pair is ``"file:chosen_line,rejected_line"``.

**Columns with other names.** ``columns`` maps our field names to the file's own column (CSV
header) or key (JSON) names, e.g. ``{"score": "offensiveness", "user_id": "annotator_id"}``;
fields it does not name keep their own names, and other columns are ignored. A key that is not
one of the reader's fields (pairs: ``user_id, prompt, chosen, rejected, split, unit``; ratings:
``user_id, prompt, text, score``) is refused with a ValueError listing the valid ones. Errors
name the column as the file has it, with the field in brackets (``ratings.csv:4: field
'offensiveness' (score): expected a number, got 'x'``). A mapped column the file lacks is one
error naming the file and the column: at the header (line 1) of a CSV file; in JSON lines at
the first line without it when the field is required, else once the file is read.

Malformed input raises :class:`RecordError` naming the file, the line (CSV: the line in the file
where the data row starts, the header being line 1) and the field. Pairs that cannot be used
(empty or identical texts) are dropped and counted in the :class:`LoadSummary`, never a crash.
A file that is not UTF-8 text, or a CSV row the :mod:`csv` module cannot read, is a RecordError
too (field ``<encoding>`` / ``<csv>``).
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records import (
    TEST_SPLIT,
    TRAIN_SPLIT,
    LoadSummary,
    PreferenceRecord,
    RecordError,
    not_utf8,
    pair_or_drop_reason,
    read_json_lines,
    require,
)

OVER_CAP = "over max_pairs_per_user"
EMPTY_RATED_TEXT = "empty rated text"
_PAIR_TEXTS = ("prompt", "chosen", "rejected")
PAIR_FIELDS = ("user_id", "prompt", "chosen", "rejected", "split", "unit")
RATING_FIELDS = ("user_id", "prompt", "text", "score")
_REQUIRED = {"user_id", "prompt", "chosen", "rejected", "text", "score"}  # prompt: pairs only
Row = tuple[int, dict[str, Any]]


def check_columns(
    columns: dict[str, str] | None, fields: tuple[str, ...], setting: str = "columns"
) -> dict[str, str]:
    """``columns`` checked against the reader's ``fields``: {field: column} of every field.

    A ValueError names ``setting`` and lists the valid fields for a key that is not one.
    """
    if columns is None:
        columns = {}
    if not isinstance(columns, dict):
        raise ValueError(f"{setting} must map field names to column names, got {columns!r}")
    unknown = [key for key in columns if key not in fields]
    if unknown:
        raise ValueError(
            f"{setting}: {', '.join(repr(k) for k in unknown)} is not a field; the fields are "
            + ", ".join(fields)
        )
    for key, column in columns.items():
        if not isinstance(column, str) or not column.strip():
            raise ValueError(f"{setting}: {key!r} needs a column name, got {column!r}")
    return {field: columns.get(field, field).strip() for field in fields}


def read_pairs(
    path: str | Path, summary: LoadSummary | None = None, columns: dict[str, str] | None = None
) -> list[PreferenceRecord]:
    """Preference pairs from a JSON-lines or CSV file (see the module docstring).

    Args:
        columns: our field -> the file's column, for files whose columns have other names.
    """
    mapping = check_columns(columns, PAIR_FIELDS)
    summary = summary if summary is not None else LoadSummary(str(path))
    records = []
    for line, row in _mapped_rows(path, mapping, required=_REQUIRED):
        with _named_as_in_file(mapping):
            user = _user(row, path, line)
            prompt, chosen, rejected = (require(row, k, str, path, line) for k in _PAIR_TEXTS)
            split = _split(row, path, line)
            unit = _optional_str(row, "unit", path, line, allow_int=True)
        reason = pair_or_drop_reason(chosen, rejected)
        if reason is not None:
            summary.drop(reason)
            continue
        records.append(
            PreferenceRecord(
                user=user,
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                unit=prompt if unit is None else unit,
                split=split,
                origin=f"{path}:{line}",
            )
        )
    summary.kept += len(records)
    return records


@dataclass(frozen=True)
class _Rating:
    line: int
    prompt: str | None
    text: str
    score: float


def read_ratings(
    path: str | Path,
    max_pairs_per_user: int = 200,
    seed: int = 0,
    item_groups: int = 10,
    summary: LoadSummary | None = None,
    columns: dict[str, str] | None = None,
) -> list[PreferenceRecord]:
    """Pairs formed within each user from a per-user ratings file (see the module docstring).

    Args:
        columns: our field -> the file's column, for files whose columns have other names.
    """
    if max_pairs_per_user < 1 or item_groups < 1:
        raise ValueError(
            f"need max_pairs_per_user >= 1 and item_groups >= 1, got "
            f"{max_pairs_per_user} and {item_groups}"
        )
    mapping = check_columns(columns, RATING_FIELDS)
    summary = summary if summary is not None else LoadSummary(str(path))
    by_user: dict[str, list[_Rating]] = {}
    for line, row in _mapped_rows(path, mapping, required=_REQUIRED - {"prompt"}):
        with _named_as_in_file(mapping):
            user = _user(row, path, line)
            prompt = _optional_str(row, "prompt", path, line)
            text = require(row, "text", str, path, line)
            score = _score(row, path, line)
        if not text.strip():
            summary.drop(EMPTY_RATED_TEXT)
            continue
        by_user.setdefault(user, []).append(_Rating(line, prompt, text, score))
    keys = {
        user: [_pairing_key(item, item_groups, seed) for item in items]
        for user, items in by_user.items()
    }
    unit_of = _unit_names(
        (item.text.strip(), key)
        for user, items in by_user.items()
        for item, key in zip(items, keys[user])
    )
    records = []
    for user, items in by_user.items():
        rng = random.Random(f"{seed}/{user}")
        members: dict[tuple, list[_Rating]] = {}
        for item, key in zip(items, keys[user]):
            members.setdefault(key, []).append(item)
        pairs = []
        for key, group in members.items():
            for i, first in enumerate(group):
                for second in group[i + 1 :]:
                    if first.score == second.score:
                        continue
                    win, lose = (first, second) if first.score > second.score else (second, first)
                    prompt = win.prompt or ""
                    reason = pair_or_drop_reason(win.text, lose.text)
                    if reason is not None:
                        summary.drop(reason)
                        continue
                    pairs.append(
                        PreferenceRecord(
                            user=user,
                            prompt=prompt,
                            chosen=win.text,
                            rejected=lose.text,
                            unit=unit_of[key],
                            origin=f"{path}:{win.line},{lose.line}",
                        )
                    )
        if len(pairs) > max_pairs_per_user:
            summary.drop(OVER_CAP, len(pairs) - max_pairs_per_user)
            keep = sorted(rng.sample(range(len(pairs)), max_pairs_per_user))
            pairs = [pairs[i] for i in keep]
        records += pairs
    summary.kept += len(records)
    return records


def item_group(text: str, item_groups: int, seed: int) -> int:
    """The group of a rated text: a seeded hash, the same for every user who rated it."""
    digest = hashlib.sha256(f"{seed}/{text.strip()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % item_groups


def _pairing_key(item: _Rating, item_groups: int, seed: int) -> tuple:
    """Which items may pair: ``("prompt", p)`` by prompt, else ``("group", k)`` by text group."""
    if item.prompt is not None:
        return ("prompt", item.prompt)
    return ("group", item_group(item.text, item_groups, seed))


def _unit_names(text_keys) -> dict[tuple, str]:
    """Unit name of each pairing key, over ALL users: keys whose items share a text (one answer
    rated under two prompts) merge under the first key, so a text is in one unit only."""
    parent: dict[tuple, tuple] = {}
    order: dict[tuple, int] = {}
    first_key_of_text: dict[str, tuple] = {}

    def root(key: tuple) -> tuple:
        while parent[key] != key:
            key = parent[key]
        return key

    for text, key in text_keys:
        parent.setdefault(key, key)
        order.setdefault(key, len(order))
        a, b = root(first_key_of_text.setdefault(text, key)), root(key)
        if a != b:
            a, b = (a, b) if order[a] < order[b] else (b, a)
            parent[b] = a
    names = {}
    for key in parent:
        kind, value = root(key)
        names[key] = value if kind == "prompt" else f"group{value}"
    return names


def _mapped_rows(path: str | Path, mapping: dict[str, str], required: set[str]) -> Iterator[Row]:
    """The file's rows with our field names as keys (``mapping``: field -> column); a mapped
    column the file lacks is one error (see the module docstring)."""
    renamed = {field: column for field, column in mapping.items() if column != field}
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path, renamed)
    elif suffix in (".jsonl", ".json"):
        rows = read_json_lines(path)
    else:
        raise ValueError(f"{path}: unknown file type {suffix!r}; expected .jsonl, .json or .csv")
    never_seen = {field for field in renamed if field not in required}
    for line, raw in rows:
        row = {field: raw[column] for field, column in mapping.items() if column in raw}
        never_seen -= set(row)
        yield line, row
    if never_seen and suffix != ".csv":
        field = sorted(never_seen)[0]
        raise ValueError(
            f"{path}: no line has the column {renamed[field]!r} that columns maps {field!r} to"
        )


@contextmanager
def _named_as_in_file(mapping: dict[str, str]) -> Iterator[None]:
    """Re-raises a RecordError about a renamed field naming the file's column, the field in
    brackets: ``field 'offensiveness' (score): ...``."""
    try:
        yield
    except RecordError as error:
        column = mapping.get(error.field_name, error.field_name)
        if column == error.field_name:
            raise
        named = RecordError(error.path, error.line, column, error.problem)
        problem = f"field {column!r} ({error.field_name}): {error.problem}"
        named.args = (f"{error.path}:{error.line}: {problem}",)
        raise named from None


def _read_csv(path: str | Path, expect: dict[str, str]) -> Iterator[Row]:
    """Rows as dicts keyed by the header; ``line`` is where the row starts in the file.
    ``expect``: field -> column the header must have (the renamed ones)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            while header == []:
                header = next(reader, None)
            if header is None:
                raise RecordError(path, 1, "<header>", "empty file; CSV needs a header row")
            columns = [name.strip() for name in header]
            for field, column in expect.items():
                if column not in columns:
                    raise RecordError(
                        path,
                        reader.line_num,
                        column,
                        f"no such column (columns maps {field!r} to it); the header has "
                        + ", ".join(repr(c) for c in columns),
                    )
            start = reader.line_num + 1
            for values in reader:
                line, start = start, reader.line_num + 1
                if not any(value.strip() for value in values):
                    continue
                if len(values) > len(columns):
                    raise RecordError(
                        path,
                        line,
                        "<csv>",
                        f"{len(values)} values for {len(columns)} header columns",
                    )
                yield line, dict(zip(columns, values))
        except csv.Error as error:
            raise RecordError(path, reader.line_num, "<csv>", str(error)) from None
        except UnicodeDecodeError as error:
            raise not_utf8(path, error) from None


def _user(row: dict[str, Any], path: str | Path, line: int) -> str:
    user = str(require(row, "user_id", (str, int), path, line)).strip()
    if not user:
        raise RecordError(path, line, "user_id", "empty")
    return user


def _optional_str(
    row: dict[str, Any], key: str, path: str | Path, line: int, allow_int: bool = False
) -> str | None:
    """``row[key]`` as a string, or None where it is absent or blank."""
    value = row.get(key)
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is not None and not isinstance(value, str):
        raise RecordError(path, line, key, f"expected str, got {type(value).__name__}")
    return value if value and value.strip() else None


def _split(row: dict[str, Any], path: str | Path, line: int) -> str | None:
    value = _optional_str(row, "split", path, line)
    if value is None:
        return None
    if value.strip().lower() not in (TRAIN_SPLIT, TEST_SPLIT):
        raise RecordError(path, line, "split", f"expected 'train' or 'test', got {value!r}")
    return value.strip().lower()


def _score(row: dict[str, Any], path: str | Path, line: int) -> float:
    value = row.get("score")
    if value is None or value == "":
        raise RecordError(path, line, "score", "missing")
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        score = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond any float
        raise RecordError(path, line, "score", f"expected a number, got {value!r}") from None
    if not math.isfinite(score):
        raise RecordError(path, line, "score", f"expected a finite number, got {value!r}")
    return score
