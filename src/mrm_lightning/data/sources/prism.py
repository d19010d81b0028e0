"""PRISM alignment (Kirk et al. 2024): multi-turn conversations into preference pairs.

Format (``HannahRoseKirk/prism-alignment``, JSON lines, read as published):

- ``conversations.jsonl``: one conversation per line with ``conversation_id``, ``user_id`` and
  ``conversation_history``, a list of utterances with ``turn`` (0-based), ``role`` (``"user"``
  or ``"model"``), ``content`` and, for model utterances, ``if_chosen``, ``within_turn_id``,
  ``score``, ``model_name``... In each turn the user wrote one message, saw several model
  responses (up to 4 in the opening turn, 2 later) and chose one. The release sets
  ``if_chosen`` in later turns by comparing texts, so two identical responses can both be
  chosen (a tie); a turn can have a single response; an empty text is the literal string
  ``"EMPTY STRING"``.
- ``survey.jsonl``: one user per line with ``user_id`` and ``num_completed_conversations``.

Protocol (the paper's, with the reference MRM preprocessing's reading of the release):

- users with no completed conversation are dropped (when a survey is given);
- a text that is ``"EMPTY STRING"`` after ``strip()`` is empty: an empty user message is no
  user message, an empty chosen response is no chosen response, an empty rejected response is
  dropped ("empty response text");
- chosen responses of one turn with the same text (after ``strip()``) are one tie, read as the
  first of them; chosen responses with different texts are malformed (a RecordError);
- a turn lacking a user message, a chosen or a rejected response is dropped, and so is every
  (chosen, rejected) pair whose rejected text is empty or equals the chosen text;
- one pair per remaining (chosen, rejected) response of a turn; a conversation whose turns
  made no pair is dropped ("conversation with no usable turn"). Every drop is counted;
- the prompt is the turn's user message and the history the conversation so far: each earlier
  turn as its user message followed by the response the user chose (the path the
  conversation continued along). Which earlier turns enter it is ``history``:
  ``"paired_turns"`` (default, the reference MRM protocol) keeps only turns that made a pair;
  ``"chosen_turns"`` keeps every turn with a user message and a chosen response.

Per-user filtering (at least 6 conversations) and seen/unseen splits happen downstream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, get_args

from jsonargparse import lazy_instance

from ..encoder import TextEncoder
from ..records import (
    LoadSummary,
    PreferenceRecord,
    RecordError,
    pair_or_drop_reason,
    read_json_lines,
    require,
)
from .text import TextPreferences

HUB_NAME = "HannahRoseKirk/prism-alignment"
HISTORY = "conversation_history"
EMPTY = "EMPTY STRING"  # how the release writes an empty text

# which earlier turns enter a later turn's history (see the module docstring)
HistoryRule = Literal["paired_turns", "chosen_turns"]

# (origin path, line, object): file lines and hub rows go through the same parsing
Row = tuple[str, int, dict[str, Any]]


def check_history(history: str) -> None:
    """A ValueError naming the setting unless ``history`` is one of :data:`HistoryRule`."""
    if history not in get_args(HistoryRule):
        choices = " or ".join(repr(c) for c in get_args(HistoryRule))
        raise ValueError(f"PRISM.history must be {choices}, got {history!r}")


def read_prism(
    conversations_path: str | Path,
    survey_path: str | Path | None = None,
    summary: LoadSummary | None = None,
    history: HistoryRule = "paired_turns",
) -> list[PreferenceRecord]:
    """Preference pairs from local ``conversations.jsonl`` (and optionally ``survey.jsonl``)."""
    check_history(history)
    completed = None
    if survey_path is not None:
        completed = completed_conversations(
            (str(survey_path), n, obj) for n, obj in read_json_lines(survey_path)
        )
    rows = ((str(conversations_path), n, obj) for n, obj in read_json_lines(conversations_path))
    return records_from_conversations(rows, completed, summary, history)


def load_prism_hub(
    summary: LoadSummary | None = None, history: HistoryRule = "paired_turns"
) -> list[PreferenceRecord]:
    """The same pairs from the published dataset, for machines with hub access (untested)."""
    from datasets import load_dataset

    check_history(history)

    def rows(config: str) -> Iterator[Row]:
        for index, row in enumerate(load_dataset(HUB_NAME, config, split="train"), start=1):
            turns = row.get(HISTORY)
            if isinstance(turns, dict):  # a Sequence-of-struct feature comes as dict of lists
                row = {**row, HISTORY: [dict(zip(turns, v)) for v in zip(*turns.values())]}
            yield f"hf://{HUB_NAME}/{config}", index, row

    survey = completed_conversations(rows("survey"))
    return records_from_conversations(rows("conversations"), survey, summary, history)


def completed_conversations(survey_rows: Iterable[Row]) -> dict[str, int]:
    """user id -> number of completed conversations, from the survey."""
    return {
        require(obj, "user_id", str, path, line): require(
            obj, "num_completed_conversations", int, path, line
        )
        for path, line, obj in survey_rows
    }


def records_from_conversations(
    rows: Iterable[Row],
    completed: dict[str, int] | None,
    summary: LoadSummary | None = None,
    history: HistoryRule = "paired_turns",
) -> list[PreferenceRecord]:
    """Pairs of every conversation in order; with a survey (``completed``), only the
    conversations of users who completed one (drops counted once per user)."""
    check_history(history)
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
        records += conversation_records(obj, path, line, summary, history)
    for reason in dropped_users.values():
        summary.drop(reason)
    summary.kept += len(records)
    return records


def conversation_records(
    obj: dict[str, Any],
    path: str,
    line: int,
    summary: LoadSummary,
    history: HistoryRule = "paired_turns",
) -> list[PreferenceRecord]:
    """The pairs of one conversation; drops are counted in ``summary``."""
    check_history(history)
    unit = require(obj, "conversation_id", str, path, line)
    user = require(obj, "user_id", str, path, line)
    turns = _turns(require(obj, HISTORY, list, path, line), path, line)
    origin = f"{path}:{line}"
    records: list[PreferenceRecord] = []
    so_far: list[tuple[str, str]] = []
    paired_turns = 0
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
        pairs: list[PreferenceRecord] = []
        if reason is not None:
            summary.drop(reason)
        else:
            for other in rejected:
                drop = pair_or_drop_reason(chosen, other)
                if drop is not None:  # an empty rejected text, or the chosen text again
                    summary.drop(drop)
                    continue
                pairs.append(
                    PreferenceRecord(
                        user=user,
                        prompt=prompt,
                        chosen=chosen,
                        rejected=other,
                        unit=unit,
                        origin=origin,
                        history=tuple(so_far),
                    )
                )
        records += pairs
        paired_turns += bool(pairs)
        # Only turns with both a user message and a chosen response can enter (keeping roles
        # alternating as chat templates require); "paired_turns" also needs a pair from it.
        if prompt is not None and chosen is not None and (pairs or history == "chosen_turns"):
            so_far += [("user", prompt), ("assistant", chosen)]
    if paired_turns == 0:
        summary.drop("conversation with no usable turn")
    return records


def _text(content: str) -> str:
    """The release's ``"EMPTY STRING"`` read as the empty text it stands for."""
    return "" if content.strip() == EMPTY else content


def _turns(
    utterances: list[Any], path: str, line: int
) -> dict[int, tuple[str | None, str | None, list[str]]]:
    """turn -> (user message, chosen response, rejected responses in within-turn order).

    Empty user messages and chosen responses are None; empty rejected responses stay ``""``
    so that the pair they would make is counted as dropped.
    """
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
            content = _text(require(utterance, "content", str, path, line))
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
                # the release marks identical texts as chosen together: one tie, the first kept
                if content.strip() != chosen[turn].strip():
                    raise RecordError(
                        path,
                        line,
                        f"{where}.if_chosen",
                        f"second chosen response in turn {turn} with a different text",
                    )
            elif is_chosen:
                chosen[turn] = content
            else:
                order = utterance.get("within_turn_id")
                order = order if isinstance(order, int) else math.inf  # unknown: after the rest
                rejected.setdefault(turn, []).append((order, index, content))
        else:
            raise RecordError(
                path, line, f"{where}.role", f"expected 'user' or 'model', got {role!r}"
            )
    # an empty user message gives nothing to condition on, an empty chosen response nothing to
    # prefer: the same as none
    return {
        turn: (
            users[turn] if users.get(turn, "").strip() else None,
            chosen[turn] if chosen.get(turn, "").strip() else None,
            [text for *_, text in sorted(rejected.get(turn, []))],
        )
        for turn in sorted(set(users) | set(chosen) | set(rejected))
    }


class PRISM(TextPreferences):
    """PRISM alignment conversations: local files, or the hub dataset if none are given.

    Args:
        conversations: path of ``conversations.jsonl``; None reads the hub dataset.
        survey: path of ``survey.jsonl``, to drop users with no completed conversation.
        history: which earlier turns a prompt's history holds. paired_turns: only turns that
            made a pair, as the reference MRM protocol; chosen_turns: every turn with a user
            message and a chosen response.
    """

    def __init__(
        self,
        conversations: str | None = None,
        survey: str | None = None,
        history: Literal["paired_turns", "chosen_turns"] = "paired_turns",
        encoder: TextEncoder = lazy_instance(TextEncoder),
        cache_dir: str = ".cache/mrm-embeddings",
        progress: bool = True,
    ) -> None:
        check_history(history)
        super().__init__(encoder, cache_dir, progress)
        self.conversations, self.survey, self.history = conversations, survey, history

    def read_records(self, summary: LoadSummary) -> list[PreferenceRecord]:
        if self.conversations is None:
            return load_prism_hub(summary, self.history)
        return read_prism(self.conversations, self.survey, summary, self.history)
