"""Your own preference pairs, one judgement per line (JSON lines or CSV)::

    {"user_id": "u1", "prompt": "...", "chosen": "...", "rejected": "...", "split": "train"}

- ``user_id`` (a string, or a JSON number turned into one), ``prompt``, ``chosen``, ``rejected``:
  required.
- ``split``: optional, ``train`` or ``test`` (any case); empty or absent means none assigned.
- ``unit``: optional, what splits keep whole; absent means the prompt text, so pairs about one
  prompt stay on one side of a split (pairs with an empty prompt should carry a unit).

Pairs that cannot be used (empty or identical texts, a repeat of an earlier line's user,
prompt, chosen and rejected) are dropped and counted in the :class:`LoadSummary`, never a
crash; so are users none of whose lines made a pair. Formats, columns with other names and
errors: :mod:`.columns`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import lazy_instance

from ..encoder import TextEncoder
from ..records import (
    TEST_SPLIT,
    TRAIN_SPLIT,
    LoadSummary,
    PreferenceRecord,
    RecordError,
    drop_duplicates,
    pair_or_drop_reason,
    require,
)
from .columns import (
    REQUIRED,
    check_columns,
    mapped_rows,
    named_as_in_file,
    optional_str,
    user_id_of,
)
from .text import TextPreferences

_PAIR_TEXTS = ("prompt", "chosen", "rejected")
PAIR_FIELDS = ("user_id", "prompt", "chosen", "rejected", "split", "unit")
# what adapting a user reads of a pairs file: split and unit only matter to training
ADAPT_FIELDS = ("user_id", "prompt", "chosen", "rejected")
ALL_DROPPED = "every pair dropped"


def read_pairs(
    path: str | Path, summary: LoadSummary | None = None, columns: dict[str, str] | None = None
) -> list[PreferenceRecord]:
    """Preference pairs from a JSON-lines or CSV file (see the module docstring).

    Args:
        columns: our field -> the file's column, for files whose columns have other names.
    """
    mapping = check_columns(columns, PAIR_FIELDS)
    summary = summary if summary is not None else LoadSummary(str(path))
    records, users = [], set()
    for line, row in mapped_rows(path, mapping, required=REQUIRED):
        with named_as_in_file(mapping):
            user = user_id_of(row, path, line)
            prompt, chosen, rejected = (require(row, k, str, path, line) for k in _PAIR_TEXTS)
            split = _split(row, path, line)
            unit = optional_str(row, "unit", path, line, allow_int=True)
        users.add(user)
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
    records = drop_duplicates(records, summary)
    paired = {record.user for record in records}
    summary.users(paired, dict.fromkeys(users - paired, ALL_DROPPED))
    summary.kept += len(records)
    return records


def pairs_columns(record: dict | None) -> dict[str, str]:
    """The columns to read a new user's pairs file with, from a checkpoint's
    :func:`.columns.columns_record`: the training files' names of user_id, prompt, chosen and
    rejected (from a ratings source: of user_id and prompt, which the two formats share);
    split and unit, which adapting does not read, keep their names."""
    columns = (record or {}).get("columns") or {}
    return {field: column for field, column in columns.items() if field in ADAPT_FIELDS}


def _split(row: dict[str, Any], path: str | Path, line: int) -> str | None:
    value = optional_str(row, "split", path, line)
    if value is None:
        return None
    if value.strip().lower() not in (TRAIN_SPLIT, TEST_SPLIT):
        raise RecordError(path, line, "split", f"expected 'train' or 'test', got {value!r}")
    return value.strip().lower()


class PairsFiles(TextPreferences):
    """Your own pairs: JSON lines or CSV with ``user_id, prompt, chosen, rejected[, split]``.

    Args:
        paths: the files (``.jsonl`` / ``.json`` / ``.csv``).
        columns: the files' own names of our fields, e.g. ``{user_id: annotator, chosen:
            better}``; fields not named keep their names. Fields: user_id, prompt, chosen,
            rejected, split, unit.
    """

    def __init__(
        self,
        paths: list[str],
        encoder: TextEncoder = lazy_instance(TextEncoder),
        cache_dir: str = ".cache/mrm-embeddings",
        progress: bool = True,
        columns: dict[str, str] | None = None,
    ) -> None:
        check_columns(columns, PAIR_FIELDS, "PairsFiles.columns")
        super().__init__(encoder, cache_dir, progress)
        self.paths, self.columns = list(paths), columns

    def read_records(self, summary: LoadSummary) -> list[PreferenceRecord]:
        records = [r for path in self.paths for r in read_pairs(path, summary, self.columns)]
        unique = drop_duplicates(records, summary)  # a pair repeated in another file
        summary.kept -= len(records) - len(unique)
        return unique
