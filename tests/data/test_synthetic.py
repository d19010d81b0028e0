"""The synthetic population: seeded, consistent, and one where personalization matters."""

import torch

from mrm_lightning import SyntheticPopulation
from mrm_lightning.method.bradley_terry import user_level_accuracy
from mrm_lightning.training.baselines import fit_global_reward


def test_population_is_seeded_and_well_formed():
    small = dict(num_users=20, embedding_dim=8, num_directions=2, min_pairs=5, max_pairs=9)
    a, b = SyntheticPopulation(**small, seed=1).load(), SyntheticPopulation(**small, seed=1).load()
    assert torch.equal(a.embeddings, b.embeddings) and torch.equal(a.chosen, b.chosen)
    assert not torch.equal(a.embeddings, SyntheticPopulation(**small, seed=2).load().embeddings)
    counts = torch.bincount(a.user, minlength=20)
    assert counts.min() >= 5 and counts.max() <= 9 and len(counts.unique()) > 1
    assert a.embedding_dim == 8 and a.num_pairs == int(counts.sum())


def test_labels_follow_the_true_rewards_with_bradley_terry_noise():
    data = SyntheticPopulation(num_users=50, hard_user_fraction=0.0, seed=0).load()
    oracle_accuracy = (data.oracle_margin > 0).float().mean()
    expected = torch.sigmoid(data.oracle_margin.abs()).mean()  # P(label agrees with true order)
    assert abs(oracle_accuracy - expected) < 0.02
    assert 0.7 < oracle_accuracy < 0.95  # noisy, but far from coin flips


def test_one_global_reward_model_is_far_below_the_oracle():
    data = SyntheticPopulation().load()  # the default population of `make train`
    train_users = data.user < data.num_users // 2
    first_half = torch.arange(data.num_pairs) % 2 == 0
    weights, _ = fit_global_reward(
        data.subset((train_users & first_half).nonzero().flatten()),
        data.subset((train_users & ~first_half).nonzero().flatten()),
    )
    held_out = data.subset((~train_users).nonzero().flatten())
    diff = held_out.embeddings[held_out.chosen] - held_out.embeddings[held_out.rejected]
    global_acc, _ = user_level_accuracy(diff @ weights, held_out.user)
    oracle_acc, users = user_level_accuracy(held_out.oracle_margin, held_out.user)
    assert users == 200
    assert oracle_acc - global_acc >= 0.15
