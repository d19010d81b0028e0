"""PRISM alignment (Kirk et al. 2024): multi-turn conversations into preference pairs.

Format (``HannahRoseKirk/prism-alignment``, JSON lines):

- ``conversations.jsonl``: one conversation per line with ``conversation_id``, ``user_id`` and
  ``conversation_history``, a list of utterances with ``turn`` (0-based), ``role`` (``"user"``
  or ``"model"``), ``content`` and, for model utterances, ``if_chosen``, ``within_turn_id``,
  ``score``, ``model_name``... In each turn the user wrote one message, saw several model
  responses (up to 4 in the opening turn, 2 later) and chose one.
- ``survey.jsonl``: one user per line with ``user_id`` and ``num_completed_conversations``.

Protocol (the paper's): drop users with no completed conversation (when a survey is given);
drop turns lacking a user message, a chosen or a rejected response, and conversations left with
no usable turn; one pair per (chosen, rejected) response of a turn. The prompt is the turn's user
message and the history the conversation so far, earlier turns' user messages followed by the
response the user chose, which is the path the conversation actually continued along.
Per-user filtering (at least 6 conversations) and seen/unseen splits happen downstream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mrm_lightning.records import (
    LoadSummary,
    PreferenceRecord,
    RecordError,
    pair_or_drop_reason,
    read_json_lines,
    require,
)

HUB_NAME = "HannahRoseKirk/prism-alignment"
HISTORY = "conversation_history"

# (origin path, line, object): file lines and hub rows go through the same parsing
Row = tuple[str, int, dict[str, Any]]


def read_prism(
    conversations_path: str | Path,
    survey_path: str | Path | None = None,
    summary: LoadSummary | None = None,
) -> list[PreferenceRecord]:
    """Preference pairs from local ``conversations.jsonl`` (and optionally ``survey.jsonl``)."""
    completed = None
    if survey_path is not None:
        completed = completed_conversations(
            (str(survey_path), n, obj) for n, obj in read_json_lines(survey_path)
        )
    rows = ((str(conversations_path), n, obj) for n, obj in read_json_lines(conversations_path))
    return records_from_conversations(rows, completed, summary)


def load_prism_hub(summary: LoadSummary | None = None) -> list[PreferenceRecord]:
    """The same pairs from the published dataset, for machines with hub access (untested)."""
    from datasets import load_dataset

    def rows(config: str) -> Iterator[Row]:
        for index, row in enumerate(load_dataset(HUB_NAME, config, split="train"), start=1):
            history = row.get(HISTORY)
            if isinstance(history, dict):  # a Sequence-of-struct feature comes as dict of lists
                row = {**row, HISTORY: [dict(zip(history, v)) for v in zip(*history.values())]}
            yield f"hf://{HUB_NAME}/{config}", index, row

    survey = completed_conversations(rows("survey"))
    return records_from_conversations(rows("conversations"), survey, summary)


def completed_conversations(survey_rows: Iterable[Row]) -> dict[str, int]:
    """user id -> number of completed conversations, from the survey."""
    return {
        require(obj, "user_id", str, path, line): require(
            obj, "num_completed_conversations", int, path, line
        )
        for path, line, obj in survey_rows
    }


def records_from_conversations(
    rows: Iterable[Row], completed: dict[str, int] | None, summary: LoadSummary | None = None
) -> list[PreferenceRecord]:
    """Pairs of every conversation in order; with a survey (``completed``), only the
    conversations of users who completed one (drops counted once per user)."""
    summary = summary if summary is not None else LoadSummary("prism")
    records: list[PreferenceRecord] = []
    dropped_users: dict[str, str] = {}
    for path, line, obj in rows:
        user = require(obj, "user_id", str, path, line)
        if completed is not None and completed.get(user, 0) <= 0:
            dropped_users[user] = (
                "user absent from survey"
                if user not in completed
                else "user has no completed conversation"
            )
            continue
        records += conversation_records(obj, path, line, summary)
    for reason in dropped_users.values():
        summary.drop(reason)
    summary.kept += len(records)
    return records


def conversation_records(
    obj: dict[str, Any], path: str, line: int, summary: LoadSummary
) -> list[PreferenceRecord]:
    """The pairs of one conversation; drops are counted in ``summary``."""
    unit = require(obj, "conversation_id", str, path, line)
    user = require(obj, "user_id", str, path, line)
    turns = _turns(require(obj, HISTORY, list, path, line), path, line)
    origin = f"{path}:{line}"
    records: list[PreferenceRecord] = []
    history: list[tuple[str, str]] = []
    usable = 0
    for turn in sorted(turns):
        prompt, chosen, rejected = turns[turn]
        reason = (
            "turn without user message"
            if prompt is None
            else "turn without chosen response"
            if chosen is None
            else "turn without rejected response"
            if not rejected
            else None
        )
        if reason is not None:
            summary.drop(reason)
        else:
            usable += 1
            for other in rejected:
                drop = pair_or_drop_reason(chosen, other)
                if drop is not None:
                    summary.drop(drop)
                    continue
                records.append(
                    PreferenceRecord(
                        user=user,
                        prompt=prompt,
                        chosen=chosen,
                        rejected=other,
                        unit=unit,
                        origin=origin,
                        history=tuple(history),
                    )
                )
        # Later turns see this one only if it has both sides, keeping roles alternating as chat
        # templates require; a turn without a rejected response still shaped the conversation.
        if prompt is not None and chosen is not None:
            history += [("user", prompt), ("assistant", chosen)]
    if usable == 0:
        summary.drop("conversation with no usable turn")
    return records


def _turns(
    utterances: list[Any], path: str, line: int
) -> dict[int, tuple[str | None, str | None, list[str]]]:
    """turn -> (user message, chosen response, rejected responses in within-turn order)."""
    users: dict[int, str] = {}
    chosen: dict[int, str] = {}
    rejected: dict[int, list[tuple[float, int, str]]] = {}
    for index, utterance in enumerate(utterances):
        where = f"{HISTORY}[{index}]"
        if not isinstance(utterance, dict):
            raise RecordError(path, line, where, f"expected object, got {type(utterance).__name__}")
        try:
            turn = require(utterance, "turn", int, path, line)
            role = require(utterance, "role", str, path, line)
            content = require(utterance, "content", str, path, line)
        except RecordError as error:  # re-raised with the utterance's place in the field name
            raise RecordError(path, line, f"{where}.{error.field_name}", error.problem) from None
        if role == "user":
            if turn in users:
                raise RecordError(
                    path, line, f"{where}.role", f"second user message in turn {turn}"
                )
            users[turn] = content
        elif role == "model":
            is_chosen = utterance.get("if_chosen")
            if not isinstance(is_chosen, bool):
                problem = (
                    "missing"
                    if is_chosen is None
                    else f"expected bool, got {type(is_chosen).__name__}"
                )
                raise RecordError(path, line, f"{where}.if_chosen", problem)
            if is_chosen and turn in chosen:
                raise RecordError(
                    path, line, f"{where}.if_chosen", f"second chosen response in turn {turn}"
                )
            if is_chosen:
                chosen[turn] = content
            else:
                order = utterance.get("within_turn_id")
                order = order if isinstance(order, int) else math.inf  # unknown: after the rest
                rejected.setdefault(turn, []).append((order, index, content))
        else:
            raise RecordError(
                path, line, f"{where}.role", f"expected 'user' or 'model', got {role!r}"
            )
    # an empty user message gives nothing to condition on: the same as no message
    return {
        turn: (
            users[turn] if users.get(turn, "").strip() else None,
            chosen.get(turn),
            [text for *_, text in sorted(rejected.get(turn, []))],
        )
        for turn in sorted(set(users) | set(chosen) | set(rejected))
    }
