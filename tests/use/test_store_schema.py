"""The profile store notices damage: its schema is recorded and checked, a missing table is an
error (never a new empty store), an edited row fails its checksum, an old store is upgraded,
and a write based on an old version is refused, in the store and over HTTP (409)."""

from __future__ import annotations

import sqlite3

import pytest

from mrm_lightning.use.profiles import ProfileDamaged, StoreError, VersionConflict
from mrm_lightning.use.store import ProfileStore
from mrm_lightning.use.store_schema import PROFILE_COLUMNS, SCHEMA_VERSION, row_checksum
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.use.test_profiles import DIGEST, profile


def test_a_new_store_records_its_schema(tmp_path):
    path = tmp_path / "s.db"
    ProfileStore(path, DIGEST).close()
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT key, value FROM store_meta"))
        columns = [row[1] for row in db.execute("PRAGMA table_info(profiles)")]
    assert meta == {"schema_version": str(SCHEMA_VERSION), "application": "mrm-lightning"}
    assert columns == PROFILE_COLUMNS


def test_a_dropped_profiles_table_is_damage_not_a_new_store(tmp_path):
    path = tmp_path / "s.db"
    with ProfileStore(path, DIGEST) as store:
        store.put("u1", profile([1.0, 2.0, 3.0]))
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE profiles")
    with pytest.raises(StoreError, match=r"s\.db: damaged profile store: its profiles table is"):
        ProfileStore(path, DIGEST)
    with sqlite3.connect(path) as db:  # and nothing was made in its place
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "profiles" not in tables


def test_an_edited_weight_fails_the_checksum(tmp_path):
    path = tmp_path / "s.db"
    with ProfileStore(path, DIGEST) as store:
        store.put("u1", profile([0.84, 2.0, 3.0]))
    with sqlite3.connect(path) as db:
        (text,) = db.execute("SELECT profile FROM profiles").fetchone()
        db.execute("UPDATE profiles SET profile = ?", (text.replace("0.84", "3.43"),))
    with ProfileStore(path, DIGEST) as store, pytest.raises(ProfileDamaged, match="checksum"):
        store.get("u1")
    with ProfileStore(path, DIGEST) as store:  # adapting the user again repairs it
        store.put("u1", profile([0.5, 2.0, 3.0]))
        assert store.get("u1").weights == [0.5, 2.0, 3.0]


def test_a_first_layout_store_is_upgraded_with_its_rows(tmp_path):
    path = tmp_path / "old.db"
    kept = profile([1.0, -1.0, 0.5])
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE profiles (user TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, "
            "profile TEXT NOT NULL)"
        )
        db.execute("INSERT INTO profiles VALUES ('u1', ?, ?)", (DIGEST, kept.to_json()))
    with ProfileStore(path, DIGEST) as store:
        assert store.get("u1") == kept and store.version("u1") == 1
    with sqlite3.connect(path) as db:
        (checksum,) = db.execute("SELECT checksum FROM profiles").fetchone()
    assert checksum == row_checksum("u1", DIGEST, kept.to_json())


def test_a_store_of_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "s.db"
    ProfileStore(path, DIGEST).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE store_meta SET value = '9' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 9"):
        ProfileStore(path, DIGEST)


def test_writes_are_versioned_and_a_stale_write_is_refused(tmp_path):
    with ProfileStore(tmp_path / "s.db", DIGEST) as store:
        assert store.version("u1") == 0
        assert store.put("u1", profile([1.0, 0.0, 0.0]), expected_version=0) == 1
        assert store.put("u1", profile([2.0, 0.0, 0.0])) == 2
        with pytest.raises(VersionConflict, match="version 2; this write was based on version 1"):
            store.put("u1", profile([3.0, 0.0, 0.0]), expected_version=1)
        assert store.get("u1").weights == [2.0, 0.0, 0.0]  # the stale write changed nothing
        assert store.put("u1", profile([3.0, 0.0, 0.0]), expected_version=2) == 3


def test_over_http_a_stale_adapt_is_409_and_a_damaged_row_names_no_server_path(
    text_model,  # noqa: F811
    tmp_path,
):
    from mrm_lightning.use.inference import PersonalizedRewardModel
    from mrm_lightning.use.server import create_app
    from tests.use.test_server import call, serving_in_a_thread

    ckpt, _, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    path = tmp_path / "served.db"
    pairs = [{"prompt": "p", "chosen": "the rain", "rejected": "a cat"}]
    with serving_in_a_thread(create_app(model, path)) as base:
        status, first = call(base, "/adapt", {"user_id": "u", "pairs": pairs, "if_version": 0})
        assert status == 200 and first["version"] == 1 and first["replaced"] is False
        status, answer = call(base, "/adapt", {"user_id": "u", "pairs": pairs, "if_version": 0})
        assert status == 409 and "at version 1" in answer["detail"]
        with sqlite3.connect(path) as db:
            db.execute("UPDATE profiles SET checksum = 'x'")
        status, answer = call(base, "/get_reward", {"query": ["p a"], "prompts": ["p"],
                                                    "user_id": "u"})  # fmt: skip
        assert status == 500 and "fails its checksum" in answer["detail"]
        assert str(tmp_path) not in answer["detail"] and "served.db" in answer["detail"]
        # adapting the user again repairs the damaged row
        status, again = call(base, "/adapt", {"user_id": "u", "pairs": pairs})
        assert status == 200 and again["version"] == 2 and again["replaced"] is True
