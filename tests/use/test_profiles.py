"""The profile store: one SQLite file, atomic replacement, one checkpoint per store."""

import dataclasses
import sqlite3

import pytest

from mrm_lightning.use.profiles import ProfileError, UserProfile
from mrm_lightning.use.store import ProfileStore

DIGEST, OTHER = "a" * 64, "b" * 64


def profile(weights, checkpoint=DIGEST) -> UserProfile:
    return UserProfile(
        weights=list(weights),
        checkpoint=checkpoint,
        encoder=None,
        standardization={"fitted_scale": 0.1 + 0.2, "input_scale": 1.0},  # 0.30000000000000004
        num_pairs=3,
        inner={"steps": 2, "lr": 0.5, "optimizer": "sgd", "proximal": 0.0, "warm_start": False},
        created_at="2026-01-01T00:00:00+00:00",
    )


def test_put_get_replace_and_users(tmp_path):
    path = tmp_path / "profiles.db"
    first, second = profile([1 / 3, -2.5e-300, 7.0]), profile([0.1, 0.2, 0.3])
    with ProfileStore(path, checkpoint=DIGEST) as store:
        assert store.get("u17") is None and store.users() == []
        store.put("u17", first)
        store.put("u2", second)
        assert store.get("u17") == first  # floats exact through the JSON text
        store.put("u17", second)  # replaces
        assert store.get("u17") == second
        assert store.users() == ["u17", "u2"]
    with ProfileStore(path) as reopened:  # the file holds it all
        assert reopened.get("u17") == second and reopened.users() == ["u17", "u2"]
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_reader_sees_the_old_profile_until_the_write_commits(tmp_path):
    path = tmp_path / "profiles.db"
    old, new = profile([1.0, 2.0, 3.0]), profile([4.0, 5.0, 6.0])
    writer, reader = ProfileStore(path, DIGEST), ProfileStore(path, DIGEST)
    writer.put("u1", old)
    with writer.transaction():
        writer.put("u1", new)
        writer.put("u2", new)
        assert reader.get("u1") == old and reader.get("u2") is None  # not half a write
    assert reader.get("u1") == new and reader.get("u2") == new
    with pytest.raises(RuntimeError, match="boom"), writer.transaction():  # all or nothing
        writer.put("u1", old)
        raise RuntimeError("boom")
    assert reader.get("u1") == new
    writer.close()
    reader.close()


def test_a_store_of_another_checkpoint_is_refused(tmp_path):
    path = tmp_path / "profiles.db"
    with ProfileStore(path, checkpoint=DIGEST) as store:
        store.put("u1", profile([1.0, 2.0, 3.0]))
        with pytest.raises(ProfileError, match=f"{OTHER}.*store is for checkpoint {DIGEST}"):
            store.put("u2", profile([1.0, 2.0, 3.0], checkpoint=OTHER))
    with pytest.raises(ProfileError, match=f"checkpoint {DIGEST}.*checkpoint {OTHER}"):
        ProfileStore(path, checkpoint=OTHER)
    with ProfileStore(path) as unchecked:  # no model given: read, but no mixing
        with pytest.raises(ProfileError, match=OTHER):
            unchecked.put("u2", profile([1.0, 2.0, 3.0], checkpoint=OTHER))
        assert unchecked.users() == ["u1"]


def test_tampered_rows_and_profiles_are_refused(tmp_path):
    path = tmp_path / "profiles.db"
    with ProfileStore(path, DIGEST) as store:
        store.put("u1", profile([1.0, 2.0, 3.0]))
        with pytest.raises(ProfileError, match="non-finite"):
            store.put("u2", profile([1.0, float("inf"), 3.0]))
        with pytest.raises(ProfileError, match="weights"):
            store.put("u2", dataclasses.replace(profile([1.0]), weights=[]))
    db = sqlite3.connect(path)
    db.execute("UPDATE profiles SET profile = ? WHERE user = 'u1'", ('{"weights": [1.0]}',))
    db.commit()
    db.close()
    with ProfileStore(path, DIGEST) as store:
        with pytest.raises(ProfileError, match="profile of 'u1'.*missing"):
            store.get("u1")
