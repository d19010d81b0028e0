"""User profiles: one user's adapted weights and what produced them, as JSON and in a store.

A :class:`UserProfile` is what :class:`mrm_lightning.use.inference.PersonalizedRewardModel` makes
from a user's pairs. It names the checkpoint (sha256 of the file), the encoder and the input
standardisation it was made with, so that a model refuses a profile made by another one.
Its JSON keeps every float exactly (Python writes the shortest text that reads back to the same
double), so ``UserProfile.from_json(p.to_json()) == p``.

A :class:`ProfileStore` keeps profiles in one SQLite file, keyed by user id, for one checkpoint.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .store_schema import StoreError, prepare_schema, row_checksum
from .store_schema import store_errors as _store_errors

FORMAT_VERSION = 1
INNER_KEYS = ("steps", "lr", "optimizer", "proximal", "warm_start")
STANDARDIZATION_KEYS = ("fitted_scale", "input_scale")


class ProfileError(ValueError):
    """A profile that is malformed, or made by another checkpoint, encoder or scale."""


class ProfileDamaged(ProfileError):
    """A stored profile whose row fails its checksum: changed outside the store."""


class VersionConflict(ProfileError):
    """A write based on a version of the profile that is no longer the stored one."""


__all__ = ["ProfileDamaged", "ProfileError", "ProfileStore", "StoreError", "UserProfile"]


# Adapted weights over standardised base rewards are a few units; far beyond that a profile is
# damaged or forged (1e308 passes the finite check and scores inf, then NaN).
MAX_WEIGHT = 1e6


@dataclass(frozen=True)
class UserProfile:
    """A user's adapted weights over the K base reward functions, and their provenance.

    Attributes:
        weights: the K adapted weights (the prior's own where nothing was adapted).
        checkpoint: sha256 of the checkpoint file that made them.
        encoder: the identity of the encoder texts were embedded with; None for a model trained
            on embeddings only.
        standardization: ``fitted_scale`` and ``input_scale`` of the model's inputs.
        num_pairs: how many pairs the user gave.
        inner: the adaptation used: ``steps``, ``lr`` (the learning rate actually used),
            ``optimizer``, ``proximal``, ``warm_start`` (True: the global model, no adaptation).
        created_at: ISO 8601 UTC time of making.
        format_version: of this structure.
    """

    weights: list[float]
    checkpoint: str
    encoder: dict[str, Any] | None
    standardization: dict[str, float]
    num_pairs: int
    inner: dict[str, Any]
    created_at: str
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """One line of JSON; floats written exactly, NaN or infinity refused."""
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> UserProfile:
        """Parse and check a profile; anything malformed raises :class:`ProfileError`."""
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, ProfileError) as error:
            raise ProfileError(f"profile is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ProfileError("profile must be a JSON object")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ProfileError(f"profile fields: missing {missing}, unknown {unknown}")
        profile = cls(**data)
        profile.check()
        return profile

    def check(self) -> None:
        """Raise :class:`ProfileError` naming the first field that is malformed."""
        if self.format_version != FORMAT_VERSION:
            raise ProfileError(
                f"profile format_version {self.format_version!r}, this version reads "
                f"{FORMAT_VERSION}"
            )
        weights = self.weights
        if not isinstance(weights, list) or not weights or not all(_is_number(w) for w in weights):
            raise ProfileError("profile field 'weights' must be a non-empty list of numbers")
        if not all(math.isfinite(w) for w in weights):
            raise ProfileError("profile field 'weights' holds a non-finite value")
        if max(abs(w) for w in weights) > MAX_WEIGHT:  # finite, yet rewards overflow to inf
            raise ProfileError(f"profile field 'weights' holds a value beyond ±{MAX_WEIGHT:g}")
        if not isinstance(self.checkpoint, str) or len(self.checkpoint) != 64:
            raise ProfileError("profile field 'checkpoint' must be a sha256 hex digest")
        if self.encoder is not None and not isinstance(self.encoder, dict):
            raise ProfileError("profile field 'encoder' must be an object or null")
        scale = self.standardization
        if not isinstance(scale, dict) or sorted(scale) != sorted(STANDARDIZATION_KEYS):
            raise ProfileError(f"profile field 'standardization' needs {STANDARDIZATION_KEYS}")
        if not all(_is_number(v) and math.isfinite(v) for v in scale.values()):
            raise ProfileError("profile field 'standardization' must hold finite numbers")
        if not isinstance(self.inner, dict) or sorted(self.inner) != sorted(INNER_KEYS):
            raise ProfileError(f"profile field 'inner' needs {INNER_KEYS}")
        if not isinstance(self.num_pairs, int) or self.num_pairs < 0:
            raise ProfileError("profile field 'num_pairs' must be an integer >= 0")
        if not isinstance(self.created_at, str):
            raise ProfileError("profile field 'created_at' must be a string")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse_constant(name: str) -> float:
    raise ProfileError(f"{name} is not a finite number")


class ProfileStore:
    """Profiles in one SQLite file, one row per user, all made with one checkpoint.

    Writes are transactions in WAL mode: a reader in another connection or process sees a
    profile whole, before or after a write, never half of it.

    Args:
        path: the SQLite file (created if absent).
        checkpoint: sha256 of the model reading or writing; a store holding profiles of another
            checkpoint is then refused.
    """

    def __init__(self, path: str | Path, checkpoint: str | None = None) -> None:
        self.path = str(path)
        self._depth = 0
        self.checkpoint = checkpoint
        with _store_errors(self.path):
            # autocommit mode: transactions are opened explicitly (see `transaction`)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        try:
            with _store_errors(self.path):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._check_tables()
                other = None
                if checkpoint is not None:
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
        """Make a new store's tables, upgrade an old one, or check them (:mod:`.store_schema`),
        in one write transaction: two processes opening a new store make it once."""
        with self.transaction():
            prepare_schema(self._db, self.path)

    @contextmanager
    def transaction(self) -> Iterator[ProfileStore]:
        """Group writes: all of them land, or none (nested calls join the outer one)."""
        if self._depth == 0:
            with _store_errors(self.path):  # another writer holding it past the timeout
                self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            with _store_errors(self.path):
                self._db.execute("COMMIT")

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
        with self.transaction(), _store_errors(self.path):
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
            self._db.execute(
                "INSERT INTO profiles (user, checkpoint, profile, version, checksum) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(user) DO UPDATE SET "
                "checkpoint = excluded.checkpoint, profile = excluded.profile, "
                "version = excluded.version, checksum = excluded.checksum",
                (user, profile.checkpoint, text, current + 1, checksum),
            )
            return current + 1

    def version(self, user: str) -> int:
        """How many times ``user``'s profile was written (0: never)."""
        with _store_errors(self.path):
            row = self._db.execute("SELECT version FROM profiles WHERE user = ?", (user,))
            found = row.fetchone()
        return 0 if found is None else int(found[0])

    def get(self, user: str) -> UserProfile | None:
        """``user``'s profile, or None if the store has none."""
        with _store_errors(self.path):
            row = self._db.execute(
                "SELECT checkpoint, profile, checksum FROM profiles WHERE user = ?", (user,)
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
        with _store_errors(self.path):
            rows = self._db.execute(
                "SELECT pair FROM judgements WHERE user = ? ORDER BY position", (user,)
            )
            return [json.loads(row[0]) for row in rows]

    def set_judgements(self, user: str, pairs: list[dict], append: bool = False) -> int:
        """Store ``pairs`` (JSON-able dicts) as ``user``'s judgements, after the earlier ones
        with ``append``, else in their place; return how many the user now has."""
        with self.transaction(), _store_errors(self.path):
            if not append:
                self._db.execute("DELETE FROM judgements WHERE user = ?", (user,))
            (start,) = self._db.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM judgements WHERE user = ?", (user,)
            ).fetchone()
            self._db.executemany(
                "INSERT INTO judgements (user, position, pair) VALUES (?, ?, ?)",
                [(user, start + i, json.dumps(pair)) for i, pair in enumerate(pairs)],
            )
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM judgements WHERE user = ?", (user,)
            ).fetchone()
        return int(count)

    def feedback_answer(self, user: str, key: str) -> dict | None:
        """The answer already given to ``user``'s feedback with idempotency ``key``, if any."""
        with _store_errors(self.path):
            row = self._db.execute(
                "SELECT answer FROM feedback_keys WHERE user = ? AND key = ?", (user, key)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def remember_feedback(self, user: str, key: str, answer: dict) -> None:
        with self.transaction(), _store_errors(self.path):
            self._db.execute(
                "INSERT OR REPLACE INTO feedback_keys (user, key, answer) VALUES (?, ?, ?)",
                (user, key, json.dumps(answer)),
            )

    def delete(self, user: str) -> bool:
        """Remove ``user``'s profile, judgements and feedback keys; whether there was any."""
        with self.transaction(), _store_errors(self.path):
            removed = [
                self._db.execute(f"DELETE FROM {table} WHERE user = ?", (user,)).rowcount
                for table in ("profiles", "judgements")
            ]
            self._db.execute("DELETE FROM feedback_keys WHERE user = ?", (user,))
        return sum(removed) > 0

    def users(self) -> list[str]:
        """Every user with a profile, sorted."""
        with _store_errors(self.path):
            return [row[0] for row in self._db.execute("SELECT user FROM profiles ORDER BY user")]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
