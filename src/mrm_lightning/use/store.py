"""The profile store: users' profiles and judgements for one checkpoint, in SQLite or PostgreSQL.

``ProfileStore("profiles.db")`` keeps them in one SQLite file (:mod:`.store_sqlite`, the
default); ``ProfileStore("postgresql://mrm@db-host/mrm")`` in a PostgreSQL database that several
``mrm serve`` replicas share (:mod:`.store_postgres`). What the store does (versions, checksums,
judgements, idempotent feedback) is written once, here, over a :class:`StoreBackend`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from .profiles import ProfileDamaged, ProfileError, UserProfile, VersionConflict
from .store_postgres import PostgresBackend, database_name, is_postgres_url, without_password
from .store_schema import StoreError, row_checksum
from .store_sqlite import SQLiteBackend

__all__ = [
    "ProfileStore",
    "StoreBackend",
    "StoreError",
    "location_of",
    "open_backend",
    "public_name",
]


class StoreBackend(Protocol):
    """One connection to a store, as :class:`ProfileStore` uses it."""

    location: str  # what messages name: the file, or the URL without its password
    public_name: str  # what an HTTP client may be told: no server path, no host

    def errors(self) -> AbstractContextManager[None]:
        """The driver's errors as :class:`StoreError` naming ``location``."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement (``?`` placeholders); a cursor to fetch from."""

    def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None: ...

    def begin(self) -> None:
        """Open a write transaction."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def lock_user(self, user: str) -> None:
        """Inside a transaction: make every other writer of ``user`` wait for its end."""

    def prepare_schema(self) -> None:
        """Make a new store's tables, or check (and upgrade) an existing store's."""

    def close(self) -> None: ...


def open_backend(target: str) -> StoreBackend:
    """PostgreSQL for a ``postgresql://`` URL, else an SQLite file (created if absent)."""
    return PostgresBackend(target) if is_postgres_url(target) else SQLiteBackend(target)


def location_of(target: str | Path) -> str:
    """How messages name the store: the file, or the URL without its password."""
    return without_password(str(target)) if is_postgres_url(str(target)) else str(target)


def public_name(target: str | Path) -> str:
    """How answers to clients name the store: the file's name, or the database's."""
    target = str(target)
    if is_postgres_url(target):
        return f"postgresql database {database_name(target)}"
    return Path(target).name


class ProfileStore:
    """Profiles, one row per user, all made with one checkpoint, and the judgements each was
    adapted from.

    Args:
        target: an SQLite file (created if absent) or a ``postgresql://`` URL (the database must
            exist; its tables are made on first use).
        checkpoint: sha256 of the model reading or writing; a store holding profiles of another
            checkpoint is then refused.
    """

    def __init__(self, target: str | Path, checkpoint: str | None = None) -> None:
        self.target = str(target)
        self._db = open_backend(self.target)
        self.path = self._db.location  # what errors name (no password)
        self.public_name = self._db.public_name
        self._depth = 0
        self.checkpoint = checkpoint
        try:
            self._check_tables()
            other = None
            if checkpoint is not None:
                with self._db.errors():
                    other = self._db.execute(
                        "SELECT checkpoint FROM profiles WHERE checkpoint != ? LIMIT 1",
                        (checkpoint,),
                    ).fetchone()
            if other is not None:
                raise ProfileError(
                    f"{self.path}: the store holds profiles of checkpoint {other[0]}, "
                    f"the model is checkpoint {checkpoint}"
                )
        except BaseException:
            self._db.close()
            raise

    def _check_tables(self) -> None:
        """Make a new store's tables, upgrade an old one, or check them, in one write
        transaction: two processes opening a new store make it once."""
        with self.transaction(), self._db.errors():
            self._db.prepare_schema()

    @contextmanager
    def transaction(self) -> Iterator[ProfileStore]:
        """Group writes: all of them land, or none (nested calls join the outer one)."""
        if self._depth == 0:
            with self._db.errors():  # another writer holding it past the timeout
                self._db.begin()
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                with self._db.errors():
                    self._db.rollback()
            raise
        self._depth -= 1
        if self._depth == 0:
            with self._db.errors():
                self._db.commit()

    def lock_users(self, users: Sequence[str]) -> None:
        """Inside :meth:`transaction`: hold every other writer of these users until it ends,
        so what is read of them now is still theirs when this transaction writes. (Sorted:
        two transactions locking the same users never wait for each other in a circle.)"""
        if self._depth == 0:
            raise RuntimeError("lock_users needs an open transaction")
        with self._db.errors():
            for user in sorted(set(users)):
                self._db.lock_user(user)

    def put(self, user: str, profile: UserProfile, expected_version: int | None = None) -> int:
        """Add or replace ``user``'s profile; return its new version (1 for a new user, one
        more on each write). ``expected_version``: write only if the stored profile is still
        at that version (0: no profile), else :class:`VersionConflict`, so that a write based
        on what another writer has since replaced is never silently lost."""
        profile.check()
        if self.checkpoint is not None and profile.checkpoint != self.checkpoint:
            raise ProfileError(
                f"profile of {user!r} was made by checkpoint {profile.checkpoint}, "
                f"the store is for checkpoint {self.checkpoint}"
            )
        with self.transaction():
            self.lock_users([user])
            with self._db.errors():
                other = self._db.execute(
                    "SELECT checkpoint FROM profiles WHERE checkpoint != ? LIMIT 1",
                    (profile.checkpoint,),
                ).fetchone()
            if other is not None:
                raise ProfileError(
                    f"{self.path}: the store holds profiles of checkpoint {other[0]}, "
                    f"the profile of {user!r} is from checkpoint {profile.checkpoint}"
                )
            current = self.version(user)
            if expected_version is not None and expected_version != current:
                raise VersionConflict(
                    f"profile of {user!r} is at version {current}; this write was based on "
                    f"version {expected_version}: read it again, then write"
                )
            text = profile.to_json()
            checksum = row_checksum(user, profile.checkpoint, text)
            with self._db.errors():
                self._db.execute(
                    'INSERT INTO profiles ("user", checkpoint, profile, version, checksum) '
                    'VALUES (?, ?, ?, ?, ?) ON CONFLICT ("user") DO UPDATE SET '
                    "checkpoint = excluded.checkpoint, profile = excluded.profile, "
                    "version = excluded.version, checksum = excluded.checksum",
                    (user, profile.checkpoint, text, current + 1, checksum),
                )
            return current + 1

    def version(self, user: str) -> int:
        """How many times ``user``'s profile was written (0: never)."""
        with self._db.errors():
            found = self._db.execute(
                'SELECT version FROM profiles WHERE "user" = ?', (user,)
            ).fetchone()
        return 0 if found is None else int(found[0])

    def get(self, user: str) -> UserProfile | None:
        """``user``'s profile, or None if the store has none."""
        with self._db.errors():
            row = self._db.execute(
                'SELECT checkpoint, profile, checksum FROM profiles WHERE "user" = ?', (user,)
            ).fetchone()
        if row is None:
            return None
        if self.checkpoint is not None and row[0] != self.checkpoint:
            raise ProfileError(
                f"{self.path}: profile of {user!r} is from checkpoint {row[0]}, "
                f"the model is checkpoint {self.checkpoint}"
            )
        try:
            profile = UserProfile.from_json(row[1])
        except ProfileError as error:
            raise ProfileError(f"{self.path}: profile of {user!r}: {error}") from None
        if row[2] != row_checksum(user, row[0], row[1]):
            raise ProfileDamaged(
                f"{self.path}: profile of {user!r} fails its checksum: the row was changed "
                "outside mrm; adapt the user again (mrm adapt, POST /adapt)"
            )
        return profile

    def judgements(self, user: str) -> list[dict]:
        """The pairs ``user``'s profile was adapted from, oldest first."""
        with self._db.errors():
            rows = self._db.execute(
                'SELECT pair FROM judgements WHERE "user" = ? ORDER BY position', (user,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def set_judgements(self, user: str, pairs: list[dict], append: bool = False) -> int:
        """Store ``pairs`` (JSON-able dicts) as ``user``'s judgements, after the earlier ones
        with ``append``, else in their place; return how many the user now has."""
        with self.transaction(), self._db.errors():
            self._db.lock_user(user)
            if not append:
                self._db.execute('DELETE FROM judgements WHERE "user" = ?', (user,))
            (start,) = self._db.execute(
                'SELECT COALESCE(MAX(position) + 1, 0) FROM judgements WHERE "user" = ?', (user,)
            ).fetchone()
            if pairs:
                self._db.executemany(
                    'INSERT INTO judgements ("user", position, pair) VALUES (?, ?, ?)',
                    [(user, start + i, json.dumps(pair)) for i, pair in enumerate(pairs)],
                )
            (count,) = self._db.execute(
                'SELECT COUNT(*) FROM judgements WHERE "user" = ?', (user,)
            ).fetchone()
        return int(count)

    def feedback_answer(self, user: str, key: str) -> dict | None:
        """The answer already given to ``user``'s feedback with idempotency ``key``, if any."""
        with self._db.errors():
            row = self._db.execute(
                'SELECT answer FROM feedback_keys WHERE "user" = ? AND key = ?', (user, key)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def remember_feedback(self, user: str, key: str, answer: dict) -> None:
        with self.transaction(), self._db.errors():
            self._db.lock_user(user)
            self._db.execute(
                'INSERT INTO feedback_keys ("user", key, answer) VALUES (?, ?, ?) '
                'ON CONFLICT ("user", key) DO UPDATE SET answer = excluded.answer',
                (user, key, json.dumps(answer)),
            )

    def delete(self, user: str) -> bool:
        """Remove ``user``'s profile, judgements and feedback keys; whether there was any."""
        with self.transaction(), self._db.errors():
            self._db.lock_user(user)
            removed = [
                self._db.execute(f'DELETE FROM {table} WHERE "user" = ?', (user,)).rowcount
                for table in ("profiles", "judgements")
            ]
            self._db.execute('DELETE FROM feedback_keys WHERE "user" = ?', (user,))
        return sum(removed) > 0

    def users(self) -> list[str]:
        """Every user with a profile, sorted (in Python: the same order in every backend)."""
        with self._db.errors():
            rows = self._db.execute('SELECT "user" FROM profiles').fetchall()
        return sorted(row[0] for row in rows)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
