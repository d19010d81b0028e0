"""Online feedback: /feedback adds a user's new judgements to the stored ones and re-adapts from
all of them; a retried request (same idempotency key) counts once; concurrent feedback to one
user loses nothing; GET /users/{id} describes a user; DELETE removes profile and pairs."""

from __future__ import annotations

import threading

import pytest

from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.server import create_app
from mrm_lightning.use.store import ProfileStore
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.use.test_server import DIRECT, call, serving_in_a_thread


def as_pairs(records) -> list[dict]:
    return [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in records]


def request(base: str, method: str, path: str) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    try:
        with DIRECT.open(urllib.request.Request(base + path, method=method), timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_feedback_accumulates_and_readapts_from_all_pairs(text_model, tmp_path):  # noqa: F811
    ckpt, pairs_file, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    pairs = as_pairs([r for r in read_pairs(pairs_file) if r.user == "u3"])
    first, second = pairs[:6], pairs[6:12]
    store = tmp_path / "profiles.db"
    with serving_in_a_thread(create_app(model, store)) as base:
        status, answer = call(base, "/feedback", {"user_id": "u3", "pairs": first})
        assert status == 200 and answer["pairs_stored"] == 6 and answer["version"] == 1
        body = {"user_id": "u3", "pairs": second, "idempotency_key": "batch-2"}
        status, answer = call(base, "/feedback", body)
        assert status == 200 and answer["pairs_stored"] == 12 and answer["repeated"] is False
        assert answer["weights"] == pytest.approx(model.adapt(first + second).weights, abs=1e-6)
        status, again = call(base, "/feedback", body)  # a client's retry
        assert again["repeated"] is True and again["pairs_stored"] == 12
        assert again["version"] == answer["version"]
        # the same pair sent again is not counted twice
        status, answer = call(base, "/feedback", {"user_id": "u3", "pairs": first[:1]})
        assert status == 400 and "1 duplicate pair" in answer["detail"]
        status, info = call(base, "/users/u3")
        assert status == 200 and info["pairs"] == 12 and info["version"] == 2
        assert info["checkpoint"] == model.digest and info["updated_at"]
        # /adapt replaces the stored pairs; DELETE removes profile and pairs
        status, answer = call(base, "/adapt", {"user_id": "u3", "pairs": first})
        assert answer["pairs_stored"] == 6
        status, answer = request(base, "DELETE", "/users/u3")
        assert status == 200 and answer["deleted"] is True
        assert request(base, "GET", "/users/u3")[0] == 404
        assert request(base, "DELETE", "/users/u3")[0] == 404
    with ProfileStore(store, checkpoint=model.digest) as kept:
        assert kept.get("u3") is None and kept.judgements("u3") == []


def test_concurrent_feedback_to_one_user_loses_nothing(text_model, tmp_path):  # noqa: F811
    ckpt, pairs_file, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    pairs = as_pairs([r for r in read_pairs(pairs_file) if r.user == "u3"])[:8]
    store = tmp_path / "profiles.db"
    # two servers on one store, as two replicas: each sends 4 one-pair feedbacks at once
    with (
        serving_in_a_thread(create_app(model, store)) as one,
        serving_in_a_thread(create_app(model, store)) as two,
    ):
        statuses = []

        def send(base, pair):
            statuses.append(call(base, "/feedback", {"user_id": "u3", "pairs": [pair]})[0])

        threads = [
            threading.Thread(target=send, args=(one if i % 2 else two, pair))
            for i, pair in enumerate(pairs)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert statuses == [200] * 8
    with ProfileStore(store, checkpoint=model.digest) as kept:
        stored = kept.judgements("u3")
        profile = kept.get("u3")
    assert sorted(map(str, stored)) == sorted(
        str({**p, "history": []}) for p in pairs
    )  # every acknowledged pair, once
    assert profile.weights == pytest.approx(model.adapt(stored).weights, abs=1e-6)
