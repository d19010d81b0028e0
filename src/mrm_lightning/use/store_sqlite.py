"""The profile store in one SQLite file (the default backend: nothing to run beside mrm).

Writes are ``BEGIN IMMEDIATE`` transactions in WAL mode: one writer at a time for the whole
file (so a writer of one user needs no lock of its own), and a reader in another connection or
process sees a profile whole, before or after a write, never half of it.
Opening a file checks its layout: a missing table is damage named with the file, never a reason
to make a new, empty one (a server would then answer every known user from the prior); a table
of another application is refused; a store of the first layout (no meta, no versions) is
upgraded in place, its rows checksummed as they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .store_schema import (
    FIRST_LAYOUT_COLUMNS,
    PROFILE_COLUMNS,
    StoreError,
    check_profile_columns,
    check_schema_version,
    create_judgement_tables,
    create_tables,
    missing_profiles_table,
    row_checksum,
)


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


class SQLiteBackend:
    """One connection to a store file (see :class:`mrm_lightning.use.store.StoreBackend`)."""

    def __init__(self, path: str) -> None:
        self.location = path
        self.public_name = Path(path).name  # what an HTTP client may be told: no server path
        with store_errors(path):
            # autocommit mode: transactions are opened explicitly (`begin`)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        try:
            with store_errors(path):
                self._db.execute("PRAGMA journal_mode=WAL")
        except BaseException:
            self._db.close()
            raise

    def errors(self):
        return store_errors(self.location)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")  # waits up to the timeout for another writer

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        self._db.execute("ROLLBACK")

    def lock_user(self, user: str) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the file's only write lock."""

    def prepare_schema(self) -> None:
        """Make a new store's tables, upgrade a first-layout one, or check an existing one;
        raise :class:`StoreError` naming the file for anything else (in a write transaction)."""
        db, path = self._db, self.location
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            create_tables(self.execute)
            return
        if "store_meta" in tables:
            found = db.execute(
                "SELECT value FROM store_meta WHERE key = 'schema_version'"
            ).fetchone()
            check_schema_version(found and found[0], path)
            if "profiles" not in tables:
                raise missing_profiles_table(path)
            check_profile_columns(self.columns_of("profiles"), path)
            create_judgement_tables(self.execute)  # stores made before judgements were kept
            return
        if "profiles" not in tables:
            raise StoreError(
                f"{path}: not a profile store: an SQLite database without a profiles "
                f"table (it has {', '.join(sorted(tables)[:5])}); mrm adapt --store makes a store"
            )
        columns = self.columns_of("profiles")
        if columns != FIRST_LAYOUT_COLUMNS:
            raise StoreError(
                f"{path}: not a profile store: its profiles table has the columns "
                f"{', '.join(columns)}, a store's are {', '.join(PROFILE_COLUMNS)}"
            )
        self.upgrade_first_layout()

    def columns_of(self, table: str) -> list[str]:
        return [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]

    def upgrade_first_layout(self) -> None:
        """Add versions (1) and checksums to a store of the first layout, and its meta table."""
        db = self._db
        rows = db.execute("SELECT user, checkpoint, profile FROM profiles").fetchall()
        db.execute("ALTER TABLE profiles RENAME TO profiles_first_layout")
        create_tables(self.execute)
        db.executemany(
            "INSERT INTO profiles (user, checkpoint, profile, version, checksum) "
            "VALUES (?, ?, ?, 1, ?)",
            [(user, ckpt, text, row_checksum(user, ckpt, text)) for user, ckpt, text in rows],
        )
        db.execute("DROP TABLE profiles_first_layout")

    def close(self) -> None:
        self._db.close()
