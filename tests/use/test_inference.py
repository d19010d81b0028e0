"""A trained model in use: safe loading, adaptation to new users, scoring, profiles."""

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from mrm_lightning.data.splits import TEST, TRAIN
from mrm_lightning.training.checkpoint_file import CheckpointError
from mrm_lightning.training.lightning_cli import cli_main
from mrm_lightning.use.inference import PersonalizedRewardModel, load_checkpoint, ranking
from mrm_lightning.use.profiles import ProfileError, UserProfile
from tests.conftest import REPO

# Two clusters of users with opposite tastes and clean labels: one global model fits them
# poorly, and a few pairs tell a new user's cluster. Adapting always (scale 1, no warm-start
# fallback) so that the test measures adaptation, not the selection.
STRONG_CLUSTERS = {
    "trainer.max_epochs": 6,
    "model.warm_start": "false",
    "model.adaptation_lr_scales": "[1.0]",
    "data.source.init_args.shared_strength": 0,
    "data.source.init_args.cluster_spread": 0.1,
    "data.source.init_args.sharpness": 5,
    "data.source.init_args.hard_user_fraction": 0,
    "data.max_train_pairs_unseen": 15,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny embedding-only model, its best checkpoint, and its data module."""
    runs = tmp_path_factory.mktemp("runs")
    overrides = {**STRONG_CLUSTERS, "trainer.logger.init_args.save_dir": runs}
    args = [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    cli = cli_main(["fit", "--config", str(REPO / "configs/tiny.yaml"), *args])
    return cli, cli.trainer.checkpoint_callback.best_model_path


def user_pairs(datamodule, part, user):
    rows = datamodule.pairs_by_split[part][user]
    data = datamodule.data
    return {
        "chosen": data.embeddings[data.chosen[rows]],
        "rejected": data.embeddings[data.rejected[rows]],
    }


def accuracy_on(model, pairs, profile):
    chosen = torch.tensor(model.score_embeddings(pairs["chosen"], profile))
    rejected = torch.tensor(model.score_embeddings(pairs["rejected"], profile))
    return float((chosen > rejected).float().mean())


def test_checkpoint_records_no_encoder_for_embeddings_and_loads_weights_only(trained):
    cli, path = trained
    checkpoint, digest = load_checkpoint(path)
    assert checkpoint["mrm_encoder"] is None  # the synthetic population has no encoder
    model = PersonalizedRewardModel.from_checkpoint(path)
    assert model.digest == digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert model.encoder_info is None
    assert not model.model.training
    for name, value in model.model.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][name]), name


def test_adapting_an_unseen_user_beats_the_prior_on_their_test_pairs(trained):
    cli, path = trained
    model = PersonalizedRewardModel.from_checkpoint(path)
    assert model.inner_settings() == {
        "steps": 2,
        "lr": 1.0,  # inner_lr 1.0 times the selected scale 1.0
        "optimizer": "sgd",
        "proximal": 0.0,
        "warm_start": False,
    }
    dm = cli.datamodule
    unseen = [int(u) for u in dm.split.unseen_users]  # never part of meta-training
    profiles = model.adapt_many({u: user_pairs(dm, TRAIN, u) for u in unseen})
    gains = []
    for user in unseen:
        test = user_pairs(dm, TEST, user)
        gains.append(accuracy_on(model, test, profiles[user]) - accuracy_on(model, test, None))
        assert profiles[user].num_pairs == len(dm.pairs_by_split[TRAIN][user])
    assert sum(gains) / len(gains) > 0.1  # measured +0.21 over 12 unseen users
    assert sum(g > 0 for g in gains) > sum(g < 0 for g in gains)


def test_adaptation_is_what_the_test_step_does(trained):
    """Mean accuracy of the API's profiles on unseen users = the test's test_unseen/user_acc."""
    cli, path = trained
    metrics = cli.trainer.test(ckpt_path=path, datamodule=cli.datamodule, verbose=False)[0]
    model = PersonalizedRewardModel.from_checkpoint(path)
    dm = cli.datamodule
    unseen = [int(u) for u in dm.split.unseen_users]
    profiles = model.adapt_many({u: user_pairs(dm, TRAIN, u) for u in unseen})
    accuracy = [accuracy_on(model, user_pairs(dm, TEST, u), profiles[u]) for u in unseen]
    assert sum(accuracy) / len(accuracy) == pytest.approx(metrics["test_unseen/user_acc"], abs=1e-6)


def test_adapt_many_equals_adapt_per_user(trained):
    cli, path = trained
    model, dm = PersonalizedRewardModel.from_checkpoint(path), cli.datamodule
    users = [int(u) for u in dm.split.unseen_users[:4]]
    pairs = {u: user_pairs(dm, TRAIN, u) for u in users}
    pairs[users[0]] = {k: v[:3] for k, v in pairs[users[0]].items()}  # sizes differ: padding
    together = model.adapt_many(pairs)
    for user in users:
        alone = model.adapt(pairs[user])
        torch.testing.assert_close(
            torch.tensor(together[user].weights), torch.tensor(alone.weights), atol=1e-6, rtol=0
        )
    empty = model.adapt({"chosen": torch.empty(0, 8), "rejected": torch.empty(0, 8)})
    assert empty.weights == model.prior() and empty.num_pairs == 0


def test_profile_json_round_trip_is_bit_for_bit(trained):
    cli, path = trained
    model, dm = PersonalizedRewardModel.from_checkpoint(path), cli.datamodule
    profile = model.adapt(user_pairs(dm, TRAIN, int(dm.split.unseen_users[0])))
    again = UserProfile.from_json(profile.to_json())
    assert again == profile and again.weights == profile.weights
    assert [w.hex() for w in again.weights] == [w.hex() for w in profile.weights]
    assert again.standardization["fitted_scale"] == float(model.model.base_rewards.fitted_scale)
    assert model.score_embeddings(torch.eye(8), again) == model.score_embeddings(
        torch.eye(8), profile
    )


def test_score_rank_and_prior(trained):
    _, path = trained
    model = PersonalizedRewardModel.from_checkpoint(path)
    embeddings = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    scores = model.score_embeddings(embeddings)
    expected = model.model.base_rewards(embeddings) @ model.model.w0  # linear mix of the prior
    torch.testing.assert_close(torch.tensor(scores), expected, atol=1e-6, rtol=0)
    assert ranking(scores) == sorted(range(5), key=lambda i: -scores[i])
    assert ranking([1.0, 3.0, 3.0, 2.0]) == [1, 2, 3, 0]  # ties keep the input order


def test_tampered_or_foreign_profiles_are_refused(trained):
    cli, path = trained
    model, dm = PersonalizedRewardModel.from_checkpoint(path), cli.datamodule
    profile = model.adapt(user_pairs(dm, TRAIN, int(dm.split.unseen_users[0])))
    x = torch.eye(8)
    with pytest.raises(ProfileError, match="3 base reward functions"):
        model.score_embeddings(
            x, dataclasses.replace(profile, weights=profile.weights[:2], posterior=None)
        )
    with pytest.raises(ProfileError, match="checkpoint digest"):
        model.score_embeddings(x, dataclasses.replace(profile, checkpoint="0" * 64))
    with pytest.raises(ProfileError, match="encoder identity"):
        model.score_embeddings(x, dataclasses.replace(profile, encoder={"model": "other"}))
    scaled = {**profile.standardization, "fitted_scale": 2.0}
    with pytest.raises(ProfileError, match="input standardisation"):
        model.score_embeddings(x, dataclasses.replace(profile, standardization=scaled))
    data = json.loads(profile.to_json())
    for broken, message in [
        ({**data, "weights": [1.0, "x", 2.0]}, "weights"),
        ({k: v for k, v in data.items() if k != "inner"}, "missing \\['inner'\\]"),
        ({**data, "format_version": 99}, "format_version"),
        ({**data, "inner": {"steps": 2}}, "inner"),
    ]:
        with pytest.raises(ProfileError, match=message):
            UserProfile.from_json(json.dumps(broken))
    infinite = profile.to_json().replace(repr(profile.weights[0]), "Infinity", 1)
    with pytest.raises(ProfileError, match="Infinity"):
        UserProfile.from_json(infinite)
    with pytest.raises(ValueError, match="NaN|non-finite"):
        dataclasses.replace(profile, weights=[float("nan")] * 3).check()


def test_texts_for_an_embedding_only_model_give_a_clear_error(trained):
    _, path = trained
    model = PersonalizedRewardModel.from_checkpoint(path)
    with pytest.raises(ValueError, match="embeddings only"):
        model.score("a prompt", ["one", "two"])
    with pytest.raises(ValueError, match="embeddings only"):
        model.adapt([{"prompt": "p", "chosen": "a", "rejected": "b"}])


class NotAllowed:
    """Anything outside tensors and plain containers: weights_only loading must refuse it."""


def test_a_checkpoint_holding_other_objects_is_refused(trained, tmp_path):
    _, path = trained
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["extra"] = NotAllowed()
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(ValueError, match="refused.*never unpickled"):
        PersonalizedRewardModel.from_checkpoint(bad)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="other.ckpt: not an MRM checkpoint"):
        PersonalizedRewardModel.from_checkpoint(tmp_path / "other.ckpt")


def test_where_validation_chose_the_warm_start_the_global_model_scores_unadapted(trained):
    cli, path = trained
    adapted = PersonalizedRewardModel.from_checkpoint(path)
    model = PersonalizedRewardModel.from_checkpoint(path)
    module = model.model
    module.warm_weight.copy_(torch.randn(3, 8, generator=torch.Generator().manual_seed(1)))
    module.warm_w0.fill_(1 / 3)
    module.selected_warm_start.fill_(True)  # what on_validation_epoch_end writes
    dm = cli.datamodule
    profile = model.adapt(user_pairs(dm, TRAIN, int(dm.split.unseen_users[0])))
    assert profile.weights == [float(torch.tensor(1 / 3))] * 3 == model.prior()
    assert profile.inner["warm_start"] and profile.inner["lr"] == 0.0
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    expected = (x * module.base_rewards.scale) @ module.warm_weight.T @ module.warm_w0
    torch.testing.assert_close(torch.tensor(model.score_embeddings(x)), expected)
    assert model.score_embeddings(x, profile) == model.score_embeddings(x)
    other = adapted.adapt(user_pairs(dm, TRAIN, int(dm.split.unseen_users[0])))
    with pytest.raises(ProfileError, match="warm start"):
        model.score_embeddings(x, other)
