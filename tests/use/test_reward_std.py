"""Each reward's standard deviation under the user's posterior, from Python, `mrm score --std`
and `/get_reward` with ``return_std`` (over HTTP on 127.0.0.1); a profile without one is a
clear 409, never a made-up spread."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mrm_lightning.cli import main
from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.server import create_app
from mrm_lightning.use.store import ProfileStore
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.use.test_server import call, serving_in_a_thread

PROMPT = "write about one thing 3"
RESPONSES = ["a cat 3", "the rain 3", "a cat and the rain"]


@pytest.fixture(scope="module")
def adapted(text_model):  # noqa: F811
    ckpt, pairs, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    profile = model.adapt([r for r in read_pairs(pairs) if r.user == "u3"][:5])
    return ckpt, model, profile


def test_python_text_api_agrees_with_the_embedding_api(adapted):
    _, model, profile = adapted
    items = [((), PROMPT, r) for r in RESPONSES]
    rewards, spread = model.score_items_with_std(items, [profile, None, profile])
    vectors = model.embed(items)
    assert rewards == pytest.approx(model.score_items(items, [profile, None, profile]))
    assert spread[0] == pytest.approx(model.reward_moments(vectors[:1], profile)[1][0])
    assert spread[1] == pytest.approx(model.reward_moments(vectors[1:2], None)[1][0])
    assert all(s > 0 for s in spread)
    p = model.win_probability(PROMPT, RESPONSES[0], RESPONSES[1], profile)
    assert p == pytest.approx(
        model.win_probability_embeddings(vectors[:1], vectors[1:2], profile)[0]
    )
    assert 0 < p < 1


def test_mrm_score_std(adapted, tmp_path, capsys):
    ckpt, model, profile = adapted
    (tmp_path / "profile.json").write_text(profile.to_json())
    (tmp_path / "c.jsonl").write_text(json.dumps({"prompt": PROMPT, "responses": RESPONSES}))
    main(["score", "--ckpt", str(ckpt), "--profile", str(tmp_path / "profile.json"),
          "--input", str(tmp_path / "c.jsonl"), "--out", "-", "--std"])  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    items = [((), PROMPT, r) for r in RESPONSES]
    expected = model.score_items_with_std(items, [profile] * 3)[1]
    assert answer["reward_std"] == pytest.approx(expected, abs=1e-6)


def test_get_reward_returns_std_on_request_and_refuses_a_profile_without_one(adapted, tmp_path):
    _, model, profile = adapted
    old = dataclasses.replace(profile, posterior=None)  # as a version-1 profile reads
    with ProfileStore(tmp_path / "profiles.db", checkpoint=model.digest) as store:
        store.put("u3", profile)
        store.put("old", old)
    query = [PROMPT + " " + r for r in RESPONSES]
    body = {"query": query, "prompts": [PROMPT] * 3, "user_id": "u3"}
    with serving_in_a_thread(create_app(model, tmp_path / "profiles.db")) as base:
        status, plain = call(base, "/get_reward", body)
        assert status == 200 and "reward_std" not in plain
        status, answer = call(base, "/get_reward", {**body, "return_std": True})
        assert status == 200, answer
        assert answer["rewards"] == pytest.approx(plain["rewards"], abs=1e-6)
        items = [((), PROMPT, r) for r in RESPONSES]
        expected = model.score_items_with_std(items, [profile] * 3)[1]
        assert answer["reward_std"] == pytest.approx(expected, abs=1e-6)
        status, refused = call(base, "/get_reward", {**body, "user_id": "old", "return_std": True})
        assert status == 409 and "carries no uncertainty" in refused["detail"]
