"""The TRL reward function: TRL's calling convention, without TRL, on the tiny text model."""

import inspect

import pytest

from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.store import ProfileStore
from mrm_lightning.use.trl_reward import MRMRewardFunction, UnknownUserError, text_input
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)


def test_text_input_of_strings_and_conversations():
    assert text_input("p", "r") == ((), "p", "r")
    prompt = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "name a cat"}]},
    ]
    completion = [{"role": "assistant", "content": "tom"}]
    assert text_input(prompt, completion) == (
        (("system", "be brief"), ("user", "hi"), ("assistant", "hello")),
        "name a cat",
        "tom",
    )
    assert text_input(prompt, "tom") == text_input(prompt, completion)
    with pytest.raises(ValueError, match="end with a user message"):
        text_input(prompt[:3], completion)
    with pytest.raises(ValueError, match="no assistant message"):
        text_input(prompt, [{"role": "user", "content": "x"}])


@pytest.fixture(scope="module")
def served(text_model, tmp_path_factory):  # noqa: F811
    """(model, store path, {user: profile}) with users u1 and u2 adapted."""
    ckpt, pairs, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    records = read_pairs(pairs)
    profiles = model.adapt_many({u: [r for r in records if r.user == u] for u in ("u1", "u2")})
    path = tmp_path_factory.mktemp("trl") / "profiles.db"
    with ProfileStore(path, checkpoint=model.digest) as store:
        for user, profile in profiles.items():
            store.put(user, profile)
    return model, path, profiles


def test_the_call_signature_is_trls():
    parameters = inspect.signature(MRMRewardFunction.__call__).parameters
    assert list(parameters)[:3] == ["self", "prompts", "completions"]
    assert parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD


def test_strings_with_per_item_users_equal_the_python_api(served):
    model, path, profiles = served
    reward = MRMRewardFunction(model, ProfileStore(path, checkpoint=model.digest))
    assert reward.__name__ == "mrm_reward"
    prompts = ["write about one thing 3"] * 3 + ["explain clouds"]
    completions = ["a cat", "the rain", "a cat", "water"]
    users = ["u1", "u2", "nobody", None]  # unknown user and no user: the prior
    got = reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1], [2], [3], [4]],  # what TRL also passes
        user_id=users,
        trainer_state=None,
    )
    expected = [
        model.score(prompts[0], ["a cat"], profiles["u1"])[0],
        model.score(prompts[0], ["the rain"], profiles["u2"])[0],
        model.score(prompts[0], ["a cat"])[0],
        model.score("explain clouds", ["water"])[0],
    ]
    assert got == pytest.approx(expected, abs=1e-5)
    assert got[0] != pytest.approx(got[2], abs=1e-6)  # u1's profile is not the prior


def test_conversations_and_another_user_column_equal_the_python_api(served):
    model, path, profiles = served
    reward = MRMRewardFunction(model, str(path), user_column="worker")
    prompt = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "name a cat"},
    ]
    completions = [[{"role": "assistant", "content": c}] for c in ("tom", "a rain cloud")]
    got = reward([prompt, prompt], completions, worker=["u2", "u2"])
    history = [("user", "hi"), ("assistant", "hello")]
    expected = model.score("name a cat", ["tom", "a rain cloud"], profiles["u2"], history=history)
    assert got == pytest.approx(expected, abs=1e-5)


def test_unknown_users_under_error_and_mismatched_lengths_are_refused(served):
    model, path, _ = served
    strict = MRMRewardFunction(model, ProfileStore(path), unknown_user="error")
    assert len(strict(["p"], ["r"], user_id=["u1"])) == 1
    with pytest.raises(UnknownUserError, match="no profile of user 'ghost'"):
        strict(["p"], ["r"], user_id=["ghost"])
    with pytest.raises(UnknownUserError, match="no user id"):
        strict(["p"], ["r"])
    with pytest.raises(ValueError, match="2 values of 'user_id' but 1 completions"):
        strict(["p"], ["r"], user_id=["u1", "u2"])
    with pytest.raises(ValueError, match="unknown_user"):
        MRMRewardFunction(model, unknown_user="skip")
    no_store = MRMRewardFunction(model)  # everyone gets the prior
    assert no_store(["p"], ["r"], user_id=["u1"]) == pytest.approx(model.score("p", ["r"]))
