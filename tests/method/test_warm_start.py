"""Standardisation and warm start: by hand, and MRM's prior at least the global model."""

from __future__ import annotations

import torch

from mrm_lightning import EpisodicDataModule, MetaRewardModel, SyntheticPopulation
from mrm_lightning.data.splits import TRAIN
from mrm_lightning.method.bradley_terry import user_level_accuracy
from mrm_lightning.method.maml import pair_margins
from mrm_lightning.method.warm_start import standardizing_scale, warm_start_rows
from mrm_lightning.training.baselines import evaluate_linear_reward, fit_global_reward
from mrm_lightning.training.report import adaptation_gain


def test_standardizing_scale_by_hand():
    # entries 3, -4, 0, 0: mean square (9 + 16) / 4 = 6.25 -> scale 1 / 2.5
    assert standardizing_scale(torch.tensor([[3.0, -4.0], [0.0, 0.0]])) == 0.4
    assert standardizing_scale(torch.zeros(3, 2)) == 1.0


def test_warm_start_rows_mix_to_the_direction_by_hand():
    rows = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # mean [2, 4]; deviations [-1, -2], [1, 2]
    out = warm_start_rows(rows, torch.tensor([10.0, 0.0]))
    assert out.tolist() == [[9.0, -2.0], [11.0, 2.0]]
    assert out.mean(0).tolist() == [10.0, 0.0]


def test_adaptation_gain_by_hand():
    gain = adaptation_gain(torch.tensor([0.5, 1.0, 0.25, 0.5]), torch.tensor([0.5, 0.5, 0.5, 0.0]))
    # gains 0, +0.5, -0.25, +0.5: mean 0.1875; helped 2, hurt 1, unchanged 1 of 4
    assert gain == {"mean": 0.1875, "helped": 0.5, "hurt": 0.25, "unchanged": 0.25, "users": 4}


def fitted(scale_inputs: float = 1.0, **model_args):
    population = SyntheticPopulation(num_users=60, embedding_dim=8, min_pairs=30, max_pairs=40)
    data = population.load()
    data.embeddings = data.embeddings * scale_inputs  # raw hidden states vs unit-ish vectors
    population.load = lambda: data
    dm = EpisodicDataModule(population, users_per_batch=4, support_size=5, seed=0)
    dm.setup("fit")
    model = MetaRewardModel(embedding_dim=8, num_base_rewards=3, combination="linear", **model_args)
    model.fit_to_data(dm)
    return dm, model


def prior_val_accuracy(dm, model) -> float:
    val = dm.validation_pairs()
    with torch.no_grad():
        chosen = model.base_rewards(val.embeddings[val.chosen])[None]
        rejected = model.base_rewards(val.embeddings[val.rejected])[None]
        margins = pair_margins(model.w0[None], chosen, rejected, "linear")[0]
    return user_level_accuracy(margins, val.user)[0]


def test_the_warm_started_prior_is_the_global_model_on_validation_users():
    effective_scales = []
    for scale in (1.0, 300.0):  # the same answer whatever the embeddings' magnitude
        dm, model = fitted(scale_inputs=scale)
        direction, _ = fit_global_reward(
            dm.pairs(TRAIN, dm.meta_train_users), dm.validation_pairs()
        )
        global_acc, _ = evaluate_linear_reward(direction, dm.validation_pairs())
        assert prior_val_accuracy(dm, model) >= global_acc - 1e-9
        effective_scales.append(float(model.base_rewards.fitted_scale) * scale)
    # inputs 300x larger get a fitted scale 300x smaller: the layer sees the same inputs
    assert abs(effective_scales[0] - effective_scales[1]) < 1e-6 * effective_scales[0]


def test_fitted_scale_makes_training_differences_unit_rms():
    for scale in (0.01, 1.0, 300.0):
        dm, model = fitted(scale_inputs=scale, warm_start=False)
        train = dm.pairs(TRAIN, dm.meta_train_users)
        scaled = model.base_rewards.scale * (
            train.embeddings[train.chosen] - train.embeddings[train.rejected]
        )
        torch.testing.assert_close(scaled.square().mean().sqrt(), torch.tensor(1.0))


def test_without_warm_start_the_prior_is_a_random_mix():
    dm, model = fitted(warm_start=False, standardize_inputs=False)
    assert float(model.base_rewards.fitted_scale) == 1.0
    dm2, warm = fitted()
    assert not torch.equal(model.base_rewards.net.weight, warm.base_rewards.net.weight)


def test_scale_for_mean_square_is_standardizing_scale_given_the_mean_square():
    from mrm_lightning.method.warm_start import scale_for_mean_square

    # [[3, -4], [0, 0]]: mean square 25 / 4, so 1 / 2.5
    assert (
        scale_for_mean_square(6.25)
        == 0.4
        == standardizing_scale(torch.tensor([[3.0, -4.0], [0.0, 0.0]]))
    )
    assert scale_for_mean_square(0.0) == 1.0
