"""`mrm serve` called by OpenRLHF's OWN reward client (its released agent.py, fetched by
``python -m tests.openrlhf_client``): one sample a request, ``query``/``prompts``/``labels``,
no user field, answers read as ``rewards``, ``scores``, ``extra_logs``; several URLs shard."""

from __future__ import annotations

import asyncio

import pytest

from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.server import create_app
from mrm_lightning.use.store import ProfileStore
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.openrlhf_client import VERSION, load_agent
from tests.use.test_server import serving_in_a_thread

agent = load_agent()
pytestmark = pytest.mark.skipif(
    agent is None,
    reason=f"OpenRLHF {VERSION}'s client is not fetched: run `python -m tests.openrlhf_client`",
)


def fetch(urls: list[str], queries, prompts, labels) -> list[dict]:
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=urls)
    return asyncio.run(executor._fetch_rewards_via_http(queries, prompts, labels))


def test_openrlhf_client_gets_each_users_reward_from_its_label(text_model, tmp_path):  # noqa: F811
    ckpt, pairs, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    store = tmp_path / "profiles.db"
    with ProfileStore(store, checkpoint=model.digest) as profiles:
        for user in ("u1", "u3"):
            profiles.put(user, model.adapt([r for r in read_pairs(pairs) if r.user == user]))
        personal = {u: profiles.get(u) for u in ("u1", "u3")}
    prompt, response = "explain clouds", "the rain"
    query = prompt + " " + response  # the policy's decoded prompt and response
    expected = {u: model.score(prompt, [response], p)[0] for u, p in personal.items()}
    prior = model.score(prompt, [response])[0]
    assert abs(expected["u1"] - prior) > 1e-3  # the label must make a difference to be seen

    with serving_in_a_thread(create_app(model, store, user_field="labels")) as base:
        (answer,) = fetch([base + "/get_reward"], [query], [prompt], ["u1"])
        assert answer["rewards"] == pytest.approx([expected["u1"]], abs=1e-5)
        assert 0 < answer["scores"][0] < 1 and answer["extra_logs"] == {"personalized": [1.0]}
        (answer,) = fetch([base + "/get_reward"], [query], [prompt], [""])  # no label column
        assert answer["rewards"] == pytest.approx([prior], abs=1e-5)

        # two URLs: OpenRLHF shards a batch over them, as replicas on one store
        with serving_in_a_thread(create_app(model, store, user_field="labels")) as other:
            urls = [base + "/get_reward", other + "/get_reward"]
            answers = fetch(urls, [query, query], [prompt, prompt], ["u1", "u3"])
        got = [a["rewards"][0] for a in answers]
        assert got == pytest.approx([expected["u1"], expected["u3"]], abs=1e-5)

    # the reported failure, kept visible: without --user-field labels the label is ignored
    with serving_in_a_thread(create_app(model, store)) as base:
        (answer,) = fetch([base + "/get_reward"], [query], [prompt], ["u1"])
        assert answer["rewards"] == pytest.approx([prior], abs=1e-5)
