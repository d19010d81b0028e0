"""The profile store on a REAL PostgreSQL server (tests/postgres_server.py starts one on
127.0.0.1): the same behaviour as the SQLite file, checked side by side; replicas that share it
lose no acknowledged write; damage and bad URLs get clear errors that show no password."""

from __future__ import annotations

import io
import json
import sys
import threading

import psycopg
import pytest

from mrm_lightning.cli import main
from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.profiles import ProfileDamaged, ProfileError, StoreError, VersionConflict
from mrm_lightning.use.server import create_app
from mrm_lightning.use.store import ProfileStore
from mrm_lightning.use.store_schema import PROFILE_COLUMNS, SCHEMA_VERSION
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.use.test_feedback import as_pairs
from tests.use.test_profiles import DIGEST, OTHER, profile
from tests.use.test_server import call, serving_in_a_thread


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path):
    """Each contract test runs on an SQLite file and on a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "profiles.db")
    return request.getfixturevalue("postgres_url")


def test_store_contract_put_get_versions_judgements_delete(target):
    with ProfileStore(target, DIGEST) as store:
        assert store.users() == [] and store.get("u1") is None and store.version("u1") == 0
        assert store.put("u1", profile([1 / 3, -2.5e-300, 7.0])) == 1
        assert store.put("u1", profile([0.1, 0.2, 0.3]), expected_version=1) == 2
        assert store.put("user", profile([1.0, 2.0, 3.0])) == 1  # a reserved word in SQL
        with pytest.raises(VersionConflict, match="version 2; this write was based on version 1"):
            store.put("u1", profile([9.0, 9.0, 9.0]), expected_version=1)
        assert store.set_judgements("u1", [{"prompt": "p", "chosen": "a", "rejected": "b"}]) == 1
        assert store.set_judgements("u1", [{"prompt": "q", "chosen": "c", "rejected": "d"}],
                                    append=True) == 2  # fmt: skip
        store.remember_feedback("u1", "key-1", {"version": 2})
        assert store.feedback_answer("u1", "key-1") == {"version": 2}
    with ProfileStore(target, DIGEST) as reopened:  # all of it was committed
        assert reopened.get("u1").weights == [0.1, 0.2, 0.3]  # floats exactly
        assert reopened.users() == ["u1", "user"] and reopened.version("u1") == 2
        assert [p["prompt"] for p in reopened.judgements("u1")] == ["p", "q"]
        with pytest.raises(RuntimeError, match="boom"), reopened.transaction():  # all or none
            reopened.put("u2", profile([1.0, 1.0, 1.0]))
            raise RuntimeError("boom")
        assert reopened.get("u2") is None
        assert reopened.delete("u1") and not reopened.delete("u1")
        assert reopened.judgements("u1") == [] and reopened.feedback_answer("u1", "key-1") is None
    with pytest.raises(ProfileError, match=f"holds profiles of checkpoint {DIGEST}"):
        ProfileStore(target, OTHER)


def test_a_new_postgres_store_records_its_schema(postgres_url):
    ProfileStore(postgres_url, DIGEST).close()
    with psycopg.connect(postgres_url) as db:
        meta = dict(db.execute("SELECT key, value FROM store_meta").fetchall())
        columns = db.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'profiles' ORDER BY ordinal_position"
        ).fetchall()
    assert meta == {"schema_version": str(SCHEMA_VERSION), "application": "mrm-lightning"}
    assert [c[0] for c in columns] == PROFILE_COLUMNS


def test_postgres_damage_is_named_never_silent(postgres_url):
    with ProfileStore(postgres_url, DIGEST) as store:
        store.put("u1", profile([0.84, 2.0, 3.0]))
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE profiles SET profile = replace(profile, '0.84', '3.43')")
    with ProfileStore(postgres_url, DIGEST) as store, pytest.raises(ProfileDamaged):
        store.get("u1")
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DROP TABLE profiles")
    with pytest.raises(StoreError, match="damaged profile store: its profiles table is missing"):
        ProfileStore(postgres_url, DIGEST)
    with psycopg.connect(postgres_url, autocommit=True) as db:  # nothing made in its place
        assert db.execute("SELECT to_regclass('profiles')").fetchone() == (None,)
        db.execute("UPDATE store_meta SET value = '9' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 9"):
        ProfileStore(postgres_url, DIGEST)


def test_another_applications_postgres_tables_are_refused(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE profiles (id INTEGER, name TEXT)")
    with pytest.raises(StoreError, match="not a profile store: the database has a profiles"):
        ProfileStore(postgres_url, DIGEST)


def test_postgres_errors_name_the_store_without_its_password(postgres_server):
    url = postgres_server.url("no_such_database", password="s3cret")
    with pytest.raises(StoreError) as refused:
        ProfileStore(url, DIGEST)
    message = str(refused.value)
    assert "s3cret" not in message and "no_such_database" in message
    assert message.startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/")
    closed = f"postgresql://u:s3cret@127.0.0.1:{postgres_server.port + 1}/x"  # nobody listens
    with pytest.raises(StoreError, match="cannot use the profile store") as refused:
        ProfileStore(closed, DIGEST)
    assert "s3cret" not in str(refused.value)
    # a password in the query, and one libpq cannot parse (it echoes it): never shown
    for url, secret in [
        (f"postgresql://u@127.0.0.1:{postgres_server.port + 1}/x?password=s3cret", "s3cret"),
        (f"postgresql://u:s3%zzcret@127.0.0.1:{postgres_server.port}/x", "s3%zzcret"),
        (f"postgresql://u@127.0.0.1:{postgres_server.port}/x?sslmode=disable&password=a%zzb",
         "a%zzb"),
    ]:  # fmt: skip
        with pytest.raises(StoreError, match="cannot use the profile store") as refused:
            ProfileStore(url, DIGEST)
        message = str(refused.value)
        assert secret not in message and "s3cret" not in message, message
        assert message.startswith("postgresql://u@127.0.0.1:")


def test_postgres_replicas_lose_no_acknowledged_append(postgres_url):
    """Two connections (two replicas) each append 15 pairs to one user, one at a time, as
    /feedback does: read the stored pairs, think, write them back one longer."""
    ProfileStore(postgres_url, DIGEST).close()
    failures = []

    def replica(name: str) -> None:
        try:
            with ProfileStore(postgres_url, DIGEST) as store:
                for i in range(15):
                    with store.transaction():
                        store.lock_users(["u1"])
                        earlier = store.judgements("u1")
                        threading.Event().wait(0.002)  # the other replica runs meanwhile
                        pair = {"prompt": f"{name}{i}", "chosen": "a", "rejected": "b"}
                        store.set_judgements("u1", [*earlier, pair])
                        store.put("u1", profile([len(earlier) + 1.0, 0.0, 0.0]))
        except Exception as error:  # noqa: BLE001 (reported below)
            failures.append(error)

    threads = [threading.Thread(target=replica, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    with ProfileStore(postgres_url, DIGEST) as store:
        prompts = sorted(p["prompt"] for p in store.judgements("u1"))
        assert prompts == sorted(f"{n}{i}" for n in "ab" for i in range(15))
        assert store.get("u1").weights[0] == 30.0 and store.version("u1") == 30


def test_two_servers_on_one_postgres_store_share_users(text_model, postgres_url):  # noqa: F811
    ckpt, pairs_file, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    pairs = as_pairs([r for r in read_pairs(pairs_file) if r.user == "u3"])[:8]
    query = {"query": ["write about one thing 1 a"], "prompts": ["write about one thing 1"]}
    with (
        serving_in_a_thread(create_app(model, postgres_url)) as one,
        serving_in_a_thread(create_app(model, postgres_url)) as two,
    ):
        status, adapted = call(one, "/adapt", {"user_id": "u5", "pairs": pairs[:4]})
        assert status == 200
        status, scored = call(two, "/get_reward", {**query, "user_id": "u5"})
        assert status == 200 and scored["profiles"] == ["u5"]  # adapted on one, read on two
        statuses = []

        def send(base, pair):
            statuses.append(call(base, "/feedback", {"user_id": "u3", "pairs": [pair]})[0])

        threads = [threading.Thread(target=send, args=(one if i % 2 else two, pair))
                   for i, pair in enumerate(pairs)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert statuses == [200] * 8
        status, health = call(two, "/health")
        assert health["users"] == 2
    with ProfileStore(postgres_url, checkpoint=model.digest) as kept:
        stored, profile_u3 = kept.judgements("u3"), kept.get("u3")
    assert sorted(p["prompt"] + p["chosen"] for p in stored) == sorted(
        p["prompt"] + p["chosen"] for p in pairs
    )  # every acknowledged pair, once
    assert profile_u3.weights == pytest.approx(model.adapt(stored).weights, abs=1e-6)


def test_a_damaged_postgres_row_answers_without_the_servers_url(text_model, postgres_url):  # noqa: F811
    ckpt, pairs_file, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    pairs = as_pairs([r for r in read_pairs(pairs_file) if r.user == "u3"])[:4]
    with serving_in_a_thread(create_app(model, postgres_url)) as base:
        assert call(base, "/adapt", {"user_id": "u3", "pairs": pairs})[0] == 200
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute("UPDATE profiles SET checksum = 'x'")
        status, answer = call(base, "/get_reward", {"query": ["a b"], "prompts": ["a"],
                                                   "user_id": "u3"})  # fmt: skip
    assert status == 500 and "fails its checksum" in answer["detail"]
    assert "127.0.0.1" not in answer["detail"] and "postgresql database" in answer["detail"]


def test_mrm_adapt_and_score_with_a_postgres_url(text_model, postgres_url, monkeypatch, capsys):  # noqa: F811
    ckpt, pairs, _ = text_model
    main(["adapt", "--ckpt", str(ckpt), "--pairs", str(pairs), "--store", postgres_url])
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    with ProfileStore(postgres_url, checkpoint=model.digest) as store:
        u5 = store.get("u5")
    records = [r for r in read_pairs(pairs) if r.user == "u5"]
    assert u5.weights == pytest.approx(model.adapt(records).weights, abs=1e-6)
    line = {"id": 7, "user_id": "u5", "prompt": "write about one thing 1", "responses": ["a", "b"]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(line) + "\n"))
    capsys.readouterr()
    main(["score", "--ckpt", str(ckpt), "--store", postgres_url, "--input", "-", "--out", "-"])
    answer = json.loads(capsys.readouterr().out)
    assert answer["scores"] == pytest.approx(model.score(line["prompt"], ["a", "b"], u5), abs=1e-6)


def test_a_database_lost_while_serving_is_a_500_that_names_no_host(text_model, postgres_server):  # noqa: F811
    from tests.postgres_server import PostgresServer

    ckpt, _, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    own = PostgresServer().start()  # a server of its own, to stop under the running app
    stopped = False
    try:
        url = own.create_database("lost")
        body = {"query": ["write about one thing 1 a"], "prompts": ["write about one thing 1"],
                "user_id": "u1"}  # fmt: skip
        with serving_in_a_thread(create_app(model, url)) as base:
            assert call(base, "/get_reward", body)[0] == 200  # u1: the prior
            own.stop()
            stopped = True
            for _ in range(2):  # the broken connection, then a refused reconnection
                status, answer = call(base, "/get_reward", body)
                assert status == 500, answer
                assert "profile store (postgresql database lost) failed" in answer["detail"]
                assert "127.0.0.1" not in answer["detail"] and str(own.port) not in answer["detail"]
    finally:
        if not stopped:
            own.stop()
