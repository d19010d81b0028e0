"""Profiles carry the posterior over a user's weights; scoring returns its spread; the next
questions to ask a user are the informative ones, never repeated."""

from __future__ import annotations

import json

import pytest
import torch

from mrm_lightning.data.splits import TRAIN
from mrm_lightning.training.lightning_cli import cli_main
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.profiles import ProfileError, UserProfile
from mrm_lightning.use.user_uncertainty import information_gains
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.conftest import REPO
from tests.use.test_inference import STRONG_CLUSTERS, trained, user_pairs  # noqa: F401


def unseen_user(datamodule) -> str:
    return sorted(datamodule.pairs_by_split[TRAIN])[-1]


def first(pairs: dict, count: int) -> dict:
    return {side: pairs[side][:count] for side in ("chosen", "rejected")}


def test_a_profile_carries_a_laplace_posterior_that_narrows_with_more_pairs(trained):  # noqa: F811
    cli, path = trained
    model = PersonalizedRewardModel.from_checkpoint(path, device="cpu")
    pairs = user_pairs(cli.datamodule, TRAIN, unseen_user(cli.datamodule))
    few, many = model.adapt(first(pairs, 2)), model.adapt(pairs)
    # the prior precision validation chose from the model's grid, kept with the checkpoint
    chosen = float(model.model.selected_prior_precision)
    assert chosen in model.model.hparams.posterior_prior_precisions
    assert few.posterior["kind"] == "laplace" and few.posterior["prior_precision"] == chosen
    k = len(few.weights)
    assert len(few.posterior["covariance"]) == k
    responses = pairs["chosen"]
    _, std_few = model.reward_moments(responses, few)
    _, std_many = model.reward_moments(responses, many)
    _, std_prior = model.reward_moments(responses, None)
    assert sum(std_many) < sum(std_few) < sum(std_prior)
    # the mean is the point reward (linearised at the adapted weights)
    mean, _ = model.reward_moments(responses, many)
    assert mean == pytest.approx(model.score_embeddings(responses, many), abs=1e-5)
    assert UserProfile.from_json(many.to_json()) == many


def test_a_version_1_profile_still_loads_and_says_it_has_no_uncertainty(trained):  # noqa: F811
    cli, path = trained
    model = PersonalizedRewardModel.from_checkpoint(path, device="cpu")
    profile = model.adapt(user_pairs(cli.datamodule, TRAIN, unseen_user(cli.datamodule)))
    old = json.loads(profile.to_json())
    del old["posterior"]
    old["format_version"] = 1
    loaded = UserProfile.from_json(json.dumps(old))
    assert loaded.posterior is None and loaded.weights == profile.weights
    assert model.score_embeddings(torch.zeros(1, 8), loaded)  # scores as before
    with pytest.raises(ProfileError, match="carries no uncertainty"):
        model.reward_moments(torch.zeros(1, 8), loaded)


@pytest.mark.parametrize(
    ("posterior", "words"),
    [
        ({"kind": "gaussian"}, "'kind' of"),
        ({"kind": "laplace", "covariance": [[1.0]], "prior_precision": 1.0}, "x"),
        ({"kind": "categorical", "covariance": []}, "only 'kind'"),
    ],
)
def test_malformed_posteriors_are_refused(trained, posterior, words):  # noqa: F811
    cli, path = trained
    model = PersonalizedRewardModel.from_checkpoint(path, device="cpu")
    profile = json.loads(
        model.adapt(user_pairs(cli.datamodule, TRAIN, unseen_user(cli.datamodule))).to_json()
    )
    with pytest.raises(ProfileError, match=words):
        UserProfile.from_json(json.dumps({**profile, "posterior": posterior}))


def test_win_probability_over_the_posterior_is_less_sure_than_the_point(trained):  # noqa: F811
    cli, path = trained
    model = PersonalizedRewardModel.from_checkpoint(path, device="cpu")
    pairs = user_pairs(cli.datamodule, TRAIN, unseen_user(cli.datamodule))
    profile = model.adapt(first(pairs, 3))
    chosen_temperature = model.temperature  # validation's; in the grid of the checkpoint
    assert chosen_temperature in model.model.hparams.posterior_temperatures
    model.temperature = 1.0  # the posterior alone
    integrated = torch.tensor(
        model.win_probability_embeddings(pairs["chosen"], pairs["rejected"], profile)
    )
    margin = torch.tensor(model.score_embeddings(pairs["chosen"], profile)) - torch.tensor(
        model.score_embeddings(pairs["rejected"], profile)
    )
    point = torch.sigmoid(margin)
    assert ((integrated - 0.5).abs() <= (point - 0.5).abs() + 1e-9).all()
    assert ((integrated - 0.5).abs() < (point - 0.5).abs() - 1e-4).any()  # and it matters
    model.temperature = 0.5  # then the temperature: sigmoid(logit(p) / T)
    tempered = torch.tensor(
        model.win_probability_embeddings(pairs["chosen"], pairs["rejected"], profile)
    )
    expected = torch.sigmoid(torch.logit(integrated.double()) / 0.5)
    torch.testing.assert_close(tempered.double(), expected, atol=1e-6, rtol=0)


def test_next_pairs_follows_the_information_gain_and_never_repeats(trained):  # noqa: F811
    cli, path = trained
    model = PersonalizedRewardModel.from_checkpoint(path, device="cpu")
    pairs = user_pairs(cli.datamodule, TRAIN, unseen_user(cli.datamodule))
    count = len(pairs["chosen"])
    order = model.next_pairs(None, pairs, k=count + 5)
    assert sorted(order) == list(range(count))  # each once, all of them, no more
    weights, covariance = model.posterior(None)
    differences = (model.base_of(pairs["chosen"]) - model.base_of(pairs["rejected"]))[None]
    gains = information_gains(weights, covariance, differences, model.combination)[0]
    assert order[0] == int(gains.argmax())
    profile = model.adapt(first(pairs, 2))
    assert model.next_pairs(profile, pairs, k=1)[0] in range(count)


def test_next_pairs_of_texts_skips_answered_pairs_and_repeats_in_either_order(text_model):  # noqa: F811
    ckpt, _, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    prompt = "write about one thing 3"
    candidates = [
        {"prompt": prompt, "a": "a cat 3", "b": "the rain 3"},
        {"prompt": prompt, "a": "the rain 3", "b": "a cat 3"},  # the same comparison
        {"prompt": prompt, "a": "a cat 9", "b": "the rain 9"},
        {"prompt": prompt, "a": "same", "b": "same"},  # no comparison at all
        {"prompt": prompt, "a": "a cat 7", "b": "the rain 1"},
    ]
    answered = [{"prompt": prompt, "chosen": "the rain 9", "rejected": "a cat 9"}]
    order = model.next_pairs(None, candidates, k=5, answered=answered)
    assert sorted(order) == [0, 4]


@pytest.fixture(scope="module")
def posterior_model(tmp_path_factory):
    """A tiny model that adapts by Bayes' rule over softmax-mixed base functions."""
    runs = tmp_path_factory.mktemp("runs")
    overrides = {
        **STRONG_CLUSTERS,
        "trainer.max_epochs": 3,
        "model.combination": "softmax",
        "model.adaptation": "posterior",
        "model.inner_steps": 1,
        "trainer.logger.init_args.save_dir": runs,
    }
    args = [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    cli = cli_main(["fit", "--config", str(REPO / "configs/tiny.yaml"), *args])
    return cli, cli.trainer.checkpoint_callback.best_model_path


def test_posterior_adaptation_gives_the_exact_categorical_posterior(posterior_model):
    cli, path = posterior_model
    model = PersonalizedRewardModel.from_checkpoint(path, device="cpu")
    pairs = user_pairs(cli.datamodule, TRAIN, unseen_user(cli.datamodule))
    profile = model.adapt(pairs)
    assert profile.posterior == {"kind": "categorical"}
    q = torch.softmax(torch.tensor(profile.weights, dtype=torch.float64), 0)
    base = model.base_of(pairs["chosen"][:3]).double()
    mean, std = model.reward_moments(pairs["chosen"][:3], profile)
    expected_mean = base @ q
    expected_var = ((base - expected_mean[:, None]) ** 2) @ q
    assert mean == pytest.approx(expected_mean.tolist(), abs=1e-6)
    assert std == pytest.approx(expected_var.sqrt().tolist(), abs=1e-6)
    order = model.next_pairs(profile, pairs, k=4)
    assert len(set(order)) == 4


def test_next_pairs_many_is_next_pairs_for_each_user_in_one_batch(trained):  # noqa: F811
    cli, path = trained
    model = PersonalizedRewardModel.from_checkpoint(path, device="cpu")
    users = sorted(cli.datamodule.pairs_by_split[TRAIN])[-3:]
    pools = {u: user_pairs(cli.datamodule, TRAIN, u) for u in users}
    pools[users[1]] = first(pools[users[1]], 3)  # pools of different sizes
    profiles = {users[0]: None, users[1]: model.adapt(first(pools[users[1]], 2)),
                users[2]: model.adapt(pools[users[2]])}  # fmt: skip
    many = model.next_pairs_many({u: (profiles[u], pools[u], ()) for u in users}, k=4)
    for user in users:
        assert many[user] == model.next_pairs(profiles[user], pools[user], k=4), user
    assert len(many[users[1]]) == 3  # no more than its pool
