"""The profile store's SQLite layout: made, recognised, upgraded, and each row's checksum.

A store records its schema version in a ``store_meta`` table and keeps, per user, the profile
JSON, a version that every write raises by one, and a sha256 over (user, checkpoint, JSON);
and the user's judgements the profile was adapted from (``judgements``: one JSON pair a row, in
order), with the keys of the feedback already counted (``feedback_keys``: a retried write is
not counted twice).
Opening a store checks all of it: a missing table is damage named with the file, never a reason
to make a new, empty one (a server would then answer every known user from the prior); a table
of another application is refused; a store of the first layout (no meta, no versions) is
upgraded in place, its rows checksummed as they are.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

SCHEMA_VERSION = 2
PROFILE_COLUMNS = ["user", "checkpoint", "profile", "version", "checksum"]
FIRST_LAYOUT_COLUMNS = ["user", "checkpoint", "profile"]


class StoreError(ValueError):
    """A profile store that cannot be used (not an SQLite file, another application's
    database, damaged, locked, unwritable); the message names the store's file."""


@contextmanager
def store_errors(path: str) -> Iterator[None]:
    """SQLite's errors as a :class:`StoreError` naming the store's file (SQLite's own messages,
    such as ``file is not a database``, name none)."""
    try:
        yield
    except sqlite3.Error as error:
        if getattr(error, "sqlite_errorname", "") == "SQLITE_NOTADB":
            raise StoreError(
                f"{path}: not a profile store: the file is not an SQLite database"
            ) from None
        raise StoreError(f"{path}: cannot use the profile store ({error})") from None


def row_checksum(user: str, checkpoint: str, profile_json: str) -> str:
    """sha256 over what a row says: any edit made outside the store shows."""
    return hashlib.sha256(json.dumps([user, checkpoint, profile_json]).encode()).hexdigest()


def columns_of(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def prepare_schema(db: sqlite3.Connection, path: str) -> None:
    """Make a new store's tables, upgrade a first-layout one, or check an existing one; raise
    :class:`StoreError` naming the file for anything else. Call inside a write transaction."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        create_tables(db)
        return
    if "store_meta" in tables:
        found = db.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()
        if found is None or found[0] != str(SCHEMA_VERSION):
            raise StoreError(
                f"{path}: a profile store of schema version {found and found[0]}; this version "
                f"of mrm reads version {SCHEMA_VERSION}"
            )
        if "profiles" not in tables:
            raise StoreError(
                f"{path}: damaged profile store: its profiles table is missing (restore the "
                "file from a backup, or delete it and adapt the users again)"
            )
        if columns_of(db, "profiles") != PROFILE_COLUMNS:
            raise StoreError(
                f"{path}: damaged profile store: its profiles table has the columns "
                f"{', '.join(columns_of(db, 'profiles'))}, a store's are "
                f"{', '.join(PROFILE_COLUMNS)}"
            )
        create_judgement_tables(db)  # stores made before judgements were kept
        return
    if "profiles" not in tables:
        raise StoreError(
            f"{path}: not a profile store: an SQLite database without a profiles "
            f"table (it has {', '.join(sorted(tables)[:5])}); mrm adapt --store makes a store"
        )
    columns = columns_of(db, "profiles")
    if columns != FIRST_LAYOUT_COLUMNS:
        raise StoreError(
            f"{path}: not a profile store: its profiles table has the columns "
            f"{', '.join(columns)}, a store's are {', '.join(PROFILE_COLUMNS)}"
        )
    upgrade_first_layout(db)


def create_tables(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        "INSERT INTO store_meta (key, value) VALUES ('schema_version', ?), "
        "('application', 'mrm-lightning')",
        (str(SCHEMA_VERSION),),
    )
    db.execute(
        "CREATE TABLE profiles (user TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, "
        "profile TEXT NOT NULL, version INTEGER NOT NULL, checksum TEXT NOT NULL)"
    )
    create_judgement_tables(db)


def create_judgement_tables(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS judgements (user TEXT NOT NULL, position INTEGER NOT NULL, "
        "pair TEXT NOT NULL, PRIMARY KEY (user, position))"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS feedback_keys (user TEXT NOT NULL, key TEXT NOT NULL, "
        "answer TEXT NOT NULL, PRIMARY KEY (user, key))"
    )


def upgrade_first_layout(db: sqlite3.Connection) -> None:
    """Add versions (1) and checksums to a store of the first layout, and its meta table."""
    rows = db.execute("SELECT user, checkpoint, profile FROM profiles").fetchall()
    db.execute("ALTER TABLE profiles RENAME TO profiles_first_layout")
    create_tables(db)
    db.executemany(
        "INSERT INTO profiles (user, checkpoint, profile, version, checksum) "
        "VALUES (?, ?, ?, 1, ?)",
        [(user, ckpt, text, row_checksum(user, ckpt, text)) for user, ckpt, text in rows],
    )
    db.execute("DROP TABLE profiles_first_layout")
