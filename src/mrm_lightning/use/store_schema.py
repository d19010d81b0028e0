"""The profile store's layout, the same in every backend, and each row's checksum.

A store records its schema version in a ``store_meta`` table and keeps, per user, the profile
JSON, a version that every write raises by one, and a sha256 over (user, checkpoint, JSON);
and the user's judgements the profile was adapted from (``judgements``: one JSON pair a row, in
order), with the keys of the feedback already counted (``feedback_keys``: a retried write is
not counted twice).
The statements here are the SQL that SQLite and PostgreSQL both speak: ``?`` placeholders
(:mod:`.store_postgres` turns them into psycopg's) and ``"user"`` quoted (a reserved word in
PostgreSQL). How each backend recognises, checks or upgrades a store it opens is its own
(:mod:`.store_sqlite`, :mod:`.store_postgres`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

SCHEMA_VERSION = 2
PROFILE_COLUMNS = ["user", "checkpoint", "profile", "version", "checksum"]
FIRST_LAYOUT_COLUMNS = ["user", "checkpoint", "profile"]
APPLICATION = "mrm-lightning"

Execute = Callable[[str, Sequence[Any]], Any]


class StoreError(ValueError):
    """A profile store that cannot be used (not a store, another application's tables,
    damaged, locked, unreachable, unwritable); the message names the store (its file, or its
    URL without the password)."""


def row_checksum(user: str, checkpoint: str, profile_json: str) -> str:
    """sha256 over what a row says: any edit made outside the store shows."""
    return hashlib.sha256(json.dumps([user, checkpoint, profile_json]).encode()).hexdigest()


def create_tables(execute: Execute) -> None:
    """A new store's tables and its meta rows (call inside a write transaction)."""
    execute("CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)", ())
    execute(
        "INSERT INTO store_meta (key, value) VALUES ('schema_version', ?), ('application', ?)",
        (str(SCHEMA_VERSION), APPLICATION),
    )
    execute(
        'CREATE TABLE profiles ("user" TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, '
        "profile TEXT NOT NULL, version INTEGER NOT NULL, checksum TEXT NOT NULL)",
        (),
    )
    create_judgement_tables(execute)


def create_judgement_tables(execute: Execute) -> None:
    execute(
        'CREATE TABLE IF NOT EXISTS judgements ("user" TEXT NOT NULL, position INTEGER NOT NULL, '
        'pair TEXT NOT NULL, PRIMARY KEY ("user", position))',
        (),
    )
    execute(
        'CREATE TABLE IF NOT EXISTS feedback_keys ("user" TEXT NOT NULL, key TEXT NOT NULL, '
        'answer TEXT NOT NULL, PRIMARY KEY ("user", key))',
        (),
    )


def check_schema_version(found: str | None, location: str) -> None:
    if found != str(SCHEMA_VERSION):
        raise StoreError(
            f"{location}: a profile store of schema version {found}; this version of mrm "
            f"reads version {SCHEMA_VERSION}"
        )


def check_profile_columns(columns: list[str], location: str) -> None:
    if columns != PROFILE_COLUMNS:
        raise StoreError(
            f"{location}: damaged profile store: its profiles table has the columns "
            f"{', '.join(columns)}, a store's are {', '.join(PROFILE_COLUMNS)}"
        )


def missing_profiles_table(location: str) -> StoreError:
    return StoreError(
        f"{location}: damaged profile store: its profiles table is missing (restore it from "
        "a backup, or remove the store and adapt the users again)"
    )
