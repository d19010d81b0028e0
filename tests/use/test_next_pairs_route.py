"""``POST /next_pairs`` over HTTP on 127.0.0.1: the Python API's choice, never a comparison
stored for the user, guarded by the read key."""

from __future__ import annotations

from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.access import AccessRules
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.server import create_app
from mrm_lightning.use.store import ProfileStore
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.use.test_server import call, serving_in_a_thread

PROMPT = "write about one thing 3"
CANDIDATES = [
    {"prompt": PROMPT, "a": "a cat 3 1", "b": "the rain 3 1"},
    {"prompt": PROMPT, "a": "a cat 3 3", "b": "the rain 3 3"},
    {"prompt": "explain clouds", "a": "water in the air", "b": "a cat"},
    {"prompt": PROMPT, "a": "the rain 9 9", "b": "a cat 9 9"},
]


def test_next_pairs_over_http(text_model, tmp_path):  # noqa: F811
    ckpt, pairs, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    stored = {"prompt": PROMPT, "chosen": "the rain 3 3", "rejected": "a cat 3 3", "history": []}
    with ProfileStore(tmp_path / "profiles.db", checkpoint=model.digest) as store:
        store.put("u3", model.adapt([r for r in read_pairs(pairs) if r.user == "u3"][:4]))
        store.set_judgements("u3", [stored])
        profile = store.get("u3")
    app = create_app(model, tmp_path / "profiles.db", access=AccessRules(read_key="r" * 16))
    with serving_in_a_thread(app) as base:
        body = {"user_id": "u3", "candidates": CANDIDATES, "k": 4}
        assert call(base, "/next_pairs", body)[0] == 401  # the read key is needed
        status, answer = call_with_key(base, body, "r" * 16)
        assert status == 200, answer
        assert 1 not in answer["order"] and answer["profile"] == "u3"  # 1 is stored for u3
        expected = model.next_pairs(profile, CANDIDATES, 4, answered=[stored])
        assert answer["order"] == expected and len(expected) == 3
        assert answer["pairs"][0]["a"] == CANDIDATES[expected[0]]["a"]
        status, answer = call_with_key(base, {"candidates": CANDIDATES}, "r" * 16)
        assert status == 200 and answer["profile"] == "prior"
        assert answer["order"] == model.next_pairs(None, CANDIDATES, 1)
        status, answer = call_with_key(base, {"candidates": CANDIDATES, "k": 0}, "r" * 16)
        assert status == 422


def call_with_key(base, body, key):
    import json
    import urllib.error
    import urllib.request

    from tests.use.test_server import DIRECT

    request = urllib.request.Request(
        base + "/next_pairs", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )  # fmt: skip
    try:
        with DIRECT.open(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
