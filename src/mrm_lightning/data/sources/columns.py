"""What users' own files have in common: formats, columns with other names, field checks.

Both readers (:mod:`.pairs`, :mod:`.ratings`) take JSON lines (``.jsonl`` or ``.json``, one
object per line) or CSV (``.csv``, read with the :mod:`csv` module, header row required); the
fields are the same in both.

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
where the data row starts, the header being line 1) and the field. A file that is not UTF-8
text, or a CSV row the :mod:`csv` module cannot read, is a RecordError too (field
``<encoding>`` / ``<csv>``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..records import RecordError, not_utf8, read_json_lines, require

# every field either reader requires (``prompt``: pairs only)
REQUIRED = {"user_id", "prompt", "chosen", "rejected", "text", "score"}
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


def mapped_rows(path: str | Path, mapping: dict[str, str], required: set[str]) -> Iterator[Row]:
    """The file's rows with our field names as keys (``mapping``: field -> column); a mapped
    column the file lacks is one error (see the module docstring)."""
    renamed = {field: column for field, column in mapping.items() if column != field}
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        rows = read_csv(path, renamed)
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
def named_as_in_file(mapping: dict[str, str]) -> Iterator[None]:
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


def read_csv(path: str | Path, expect: dict[str, str]) -> Iterator[Row]:
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


def user_id_of(row: dict[str, Any], path: str | Path, line: int) -> str:
    user = str(require(row, "user_id", (str, int), path, line)).strip()
    if not user:
        raise RecordError(path, line, "user_id", "empty")
    return user


def optional_str(
    row: dict[str, Any], key: str, path: str | Path, line: int, allow_int: bool = False
) -> str | None:
    """``row[key]`` as a string, or None where it is absent or blank."""
    value = row.get(key)
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is not None and not isinstance(value, str):
        raise RecordError(path, line, key, f"expected str, got {type(value).__name__}")
    return value if value and value.strip() else None


def columns_record(source: object) -> dict | None:
    """What a checkpoint keeps of its data source's column names (plain types), so that
    ``mrm adapt`` / ``mrm score`` read a new user's file as training read its files:
    ``{"source": class name, "columns": {field: column}}`` (``{}``: the standard names); None
    for a source without a ``columns`` setting (synthetic users, TL;DR, PRISM). Written by
    ``MetaRewardModel.on_save_checkpoint`` under ``mrm_columns``; read back by
    :func:`.pairs.pairs_columns`."""
    if not hasattr(source, "columns"):
        return None
    columns = source.columns or {}
    return {
        "source": type(source).__name__,
        "columns": {str(k): str(v) for k, v in columns.items()},
    }
