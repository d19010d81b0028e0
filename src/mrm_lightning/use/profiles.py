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

FORMAT_VERSION = 1
INNER_KEYS = ("steps", "lr", "optimizer", "proximal", "warm_start")
STANDARDIZATION_KEYS = ("fitted_scale", "input_scale")


class ProfileError(ValueError):
    """A profile that is malformed, or made by another checkpoint, encoder or scale."""


class StoreError(ValueError):
    """A profile store that cannot be used (not an SQLite file, another application's
    database, locked, unwritable); the message names the store's file."""


PROFILE_COLUMNS = ["user", "checkpoint", "profile"]


@contextmanager
def _store_errors(path: str) -> Iterator[None]:
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
        """Make the profiles table in a new database; refuse another application's."""
        tables = [
            row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        if tables and "profiles" not in tables:
            raise StoreError(
                f"{self.path}: not a profile store: an SQLite database without a profiles "
                f"table (it has {', '.join(tables[:5])}); mrm adapt --store makes a store"
            )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS profiles (user TEXT PRIMARY KEY, "
            "checkpoint TEXT NOT NULL, profile TEXT NOT NULL)"
        )
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(profiles)")]
        if columns != PROFILE_COLUMNS:
            raise StoreError(
                f"{self.path}: not a profile store: its profiles table has the columns "
                f"{', '.join(columns)}, a store's are {', '.join(PROFILE_COLUMNS)}"
            )

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

    def put(self, user: str, profile: UserProfile) -> None:
        """Add or replace ``user``'s profile."""
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
            self._db.execute(
                "INSERT INTO profiles (user, checkpoint, profile) VALUES (?, ?, ?) "
                "ON CONFLICT(user) DO UPDATE SET checkpoint = excluded.checkpoint, "
                "profile = excluded.profile",
                (user, profile.checkpoint, profile.to_json()),
            )

    def get(self, user: str) -> UserProfile | None:
        """``user``'s profile, or None if the store has none."""
        with _store_errors(self.path):
            row = self._db.execute(
                "SELECT checkpoint, profile FROM profiles WHERE user = ?", (user,)
            ).fetchone()
        if row is None:
            return None
        if self.checkpoint is not None and row[0] != self.checkpoint:
            raise ProfileError(
                f"{self.path}: profile of {user!r} is from checkpoint {row[0]}, "
                f"the model is checkpoint {self.checkpoint}"
            )
        try:
            return UserProfile.from_json(row[1])
        except ProfileError as error:
            raise ProfileError(f"{self.path}: profile of {user!r}: {error}") from None

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
