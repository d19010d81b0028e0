"""Per-user ratings turned into preference pairs, one scored text per line (JSON lines or CSV)::

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
- A line repeating an earlier one's user, prompt, text and score is dropped and counted
  (``duplicate rating``): it would pair twice with every other item. Users whose ratings make
  no pair (one rated item, all scores equal, no two items of one prompt or group) are counted
  in the summary, by reason.

Formats, columns with other names and errors: :mod:`.columns`.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import lazy_instance

from ..encoder import TextEncoder
from ..records import LoadSummary, PreferenceRecord, RecordError, pair_or_drop_reason, require
from .columns import (
    REQUIRED,
    check_columns,
    mapped_rows,
    named_as_in_file,
    optional_str,
    user_id_of,
)
from .text import TextPreferences

OVER_CAP = "over max_pairs_per_user"
EMPTY_RATED_TEXT = "empty rated text"
DUPLICATE_RATING = "duplicate rating"
RATING_FIELDS = ("user_id", "prompt", "text", "score")


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
    seen: set[tuple] = set()
    for line, row in mapped_rows(path, mapping, required=REQUIRED - {"prompt"}):
        with named_as_in_file(mapping):
            user = user_id_of(row, path, line)
            prompt = optional_str(row, "prompt", path, line)
            text = require(row, "text", str, path, line)
            score = _score(row, path, line)
        by_user.setdefault(user, [])
        if not text.strip():
            summary.drop(EMPTY_RATED_TEXT)
            continue
        if (user, prompt, text, score) in seen:
            summary.drop(DUPLICATE_RATING)
            continue
        seen.add((user, prompt, text, score))
        by_user[user].append(_Rating(line, prompt, text, score))
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
    paired = {record.user for record in records}
    unpaired = {u: _why_no_pair(items) for u, items in by_user.items() if u not in paired}
    summary.users(paired, unpaired)
    summary.kept += len(records)
    return records


def _why_no_pair(items: list[_Rating]) -> str:
    """Why a user's ratings made no pair, in the summary's words."""
    if not items:
        return "every rated text empty"
    if len(items) == 1:
        return "one rated item"
    if len({item.score for item in items}) == 1:
        return "all scores equal"
    return "no two items of one prompt or group with different scores and texts"


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


class RatingsFiles(TextPreferences):
    """Per-user ratings ``user_id, [prompt,] text, score`` turned into pairs within each user.

    Args:
        paths: the files (``.jsonl`` / ``.json`` / ``.csv``).
        max_pairs_per_user: a seeded sample caps each user's pairs.
        item_groups: without prompts, each text falls in one of this many groups by a seeded
            hash, the same for every user; pairs form within a group, and a group is the split
            unit, so no rated text is on two sides of a split for anybody.
        seed: seeds grouping and sampling.
        columns: the files' own names of our fields, e.g. ``{score: offensiveness, user_id:
            annotator_id}``; fields not named keep their names. Fields: user_id, prompt, text,
            score.
    """

    def __init__(
        self,
        paths: list[str],
        max_pairs_per_user: int = 200,
        item_groups: int = 10,
        seed: int = 0,
        encoder: TextEncoder = lazy_instance(TextEncoder),
        cache_dir: str = ".cache/mrm-embeddings",
        progress: bool = True,
        columns: dict[str, str] | None = None,
    ) -> None:
        check_columns(columns, RATING_FIELDS, "RatingsFiles.columns")
        super().__init__(encoder, cache_dir, progress)
        self.paths, self.max_pairs_per_user = list(paths), max_pairs_per_user
        self.item_groups, self.seed, self.columns = item_groups, seed, columns

    def read_records(self, summary: LoadSummary) -> list[PreferenceRecord]:
        return [
            record
            for path in self.paths
            for record in read_ratings(
                path, self.max_pairs_per_user, self.seed, self.item_groups, summary, self.columns
            )
        ]
