"""The latent-class Bradley-Terry start and posterior adaptation: by hand, then on users whose
classes are planted."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mrm_lightning import EpisodicDataModule, MetaRewardModel, SyntheticPopulation
from mrm_lightning.method.mixture import (
    PreferenceMixture,
    choose_mixture,
    class_log_likelihoods,
    fit_preference_mixture,
    mixture_margins,
    posterior,
)
from mrm_lightning.method.posterior import posterior_weights
from mrm_lightning.method.subspace import PrincipalSubspace, leading_directions
from mrm_lightning.training.lightning_cli import cli_main


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_class_log_likelihoods_and_posterior_by_hand():
    # one dimension; class 0 likes +, class 1 likes -. User 0: pairs d = 2 and 1; user 1: d = -1
    differences = torch.tensor([[2.0], [1.0], [-1.0]], dtype=torch.float64)
    users = torch.tensor([0, 0, 1])
    components = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    ll = class_log_likelihoods(differences, users, 2, components)
    expected = [
        [log_sigmoid(2) + log_sigmoid(1), log_sigmoid(-2) + log_sigmoid(-1)],  # -0.440, -3.440
        [log_sigmoid(-1), log_sigmoid(1)],  # -1.313, -0.313
    ]
    torch.testing.assert_close(ll, torch.tensor(expected, dtype=torch.float64))
    # even prior: user 0's posterior is softmax(0, -3) = (0.9526, 0.0474); user 1's (0.2689, 0.7311)
    post = posterior(ll, torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(
        post,
        torch.tensor([[0.952574, 0.047426], [0.268941, 0.731059]], dtype=torch.float64),
        atol=1e-6,
        rtol=0,
    )
    # a held-out pair d = 3 for user 1: margin 3 * (0.2689 * 1 + 0.7311 * -1) = -1.3864
    even = PreferenceMixture(components, torch.tensor([0.5, 0.5], dtype=torch.float64), 0.0)
    held_out = torch.tensor([[3.0]], dtype=torch.float64)
    margins = mixture_margins(even, differences, users, held_out, torch.tensor([1]), 2)
    torch.testing.assert_close(
        margins, torch.tensor([-1.386352], dtype=torch.float64), atol=1e-6, rtol=0
    )


def planted_classes(num_users: int = 40, pairs: int = 30, dim: int = 6, seed: int = 0):
    """Users of 2 classes with opposite-ish directions; Bradley-Terry labels."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(2, dim, generator=g, dtype=torch.float64) * 2
    user_class = torch.arange(num_users) % 2
    users = torch.arange(num_users).repeat_interleave(pairs)
    differences = torch.randn(len(users), dim, generator=g, dtype=torch.float64)
    prefer = torch.rand(len(users), generator=g, dtype=torch.float64) < torch.sigmoid(
        (differences * truth[user_class[users]]).sum(-1)
    )
    differences[~prefer] *= -1  # the preferred response is "chosen"
    return differences, users, truth, user_class


def test_em_recovers_planted_classes():
    differences, users, truth, user_class = planted_classes()
    mixture = fit_preference_mixture(
        differences, users, 2, 1e-3, generator=torch.Generator().manual_seed(0)
    )
    cosine = torch.nn.functional.cosine_similarity(
        mixture.components[:, None], truth[None], dim=-1
    )  # [fitted, true]
    match = cosine.argmax(-1)
    assert sorted(match.tolist()) == [0, 1], cosine  # one fitted class per true one
    assert cosine.max(-1).values.min() > 0.9, cosine
    ll = class_log_likelihoods(differences, users, len(user_class), mixture.components)
    recovered = match[posterior(ll, mixture.proportions).argmax(-1)]
    assert (recovered == user_class).double().mean() >= 0.95
    torch.testing.assert_close(mixture.proportions.sum(), torch.tensor(1.0).double())


def test_choose_mixture_keeps_the_l2_best_on_validation_users():
    differences, users, *_ = planted_classes(num_users=60)
    train, fit, scored = (users < 40), (users >= 40), (users >= 40)
    half = torch.arange(len(users)) % 30 < 10  # a new user's first 10 pairs fit, the rest score
    fit, scored = fit & half, scored & ~half
    mixture, l2, accuracies = choose_mixture(
        (differences[train], users[train]),
        (differences[fit], users[fit] - 40),
        (differences[scored], users[scored] - 40),
        2,
        (1e-3, 10.0),  # 10: directions shrunk to almost nothing, classes blurred
        generator=torch.Generator().manual_seed(0),
    )
    assert len(accuracies) == 2 and accuracies[0] > accuracies[1]
    assert l2 == 1e-3 and accuracies[0] > 0.8


def test_posterior_weights_by_hand():
    w0 = torch.tensor([0.5, -0.5])
    # one user, two support pairs, K = 2; the second pair is padding and must not count
    margins = torch.tensor([[[2.0, -2.0], [9.0, 9.0]]])
    mask = torch.tensor([[1.0, 0.0]])
    weights = posterior_weights(w0, margins, None, mask, temperature=1.0)
    expected = [[0.5 + log_sigmoid(2), -0.5 + log_sigmoid(-2)]]  # 0.373, -2.627
    torch.testing.assert_close(weights, torch.tensor(expected))
    # both sides given: the same as their difference; temperature 0 is the prior
    torch.testing.assert_close(
        posterior_weights(w0, margins + 1, torch.ones_like(margins), mask, 1.0), weights
    )
    torch.testing.assert_close(posterior_weights(w0, margins, None, mask, 0.0), w0.expand(1, 2))


def mixture_model(**model_args):
    population = SyntheticPopulation(
        num_users=80, embedding_dim=8, num_clusters=2, min_pairs=30, max_pairs=40, seed=1
    )
    dm = EpisodicDataModule(
        population, users_per_batch=4, support_size=5, seed=0, validation_users=0.2
    )
    dm.setup("fit")
    model = MetaRewardModel(
        embedding_dim=8, num_base_rewards=2, mixture_warm_start=True, **model_args
    )
    model.fit_to_data(dm)
    return dm, model


def test_mixture_start_sets_the_base_functions_and_keeps_the_global_fallback():
    dm, model = mixture_model(adaptation="posterior", inner_lr=1.0)
    weight = model.base_rewards.net.weight
    # the base functions are two distinct class directions, not the global warm start's rows
    assert not torch.allclose(weight, model.warm_weight)
    assert torch.nn.functional.cosine_similarity(weight[0], weight[1], dim=0) < 0.9
    torch.testing.assert_close(torch.softmax(model.w0, 0).sum(), torch.tensor(1.0))
    assert bool(model.has_warm_start)  # the global model is still the fallback candidate
    # posterior adaptation: meta-gradients reach both the prior and the base functions
    batch = next(iter(dm.train_dataloader()))
    model.training_step(batch, 0).backward()
    assert model.w0.grad.abs().sum() > 0 and weight.grad.abs().sum() > 0


def test_mixture_and_posterior_settings_are_checked():
    for bad in (
        {"mixture_warm_start": True, "hidden_dim": 4},
        {"mixture_warm_start": True, "mixture_l2_grid": ()},
        {"adaptation": "posterior", "combination": "linear"},
        {"adaptation": "bayes"},
        {"principal_ranks": (2, 4)},  # several ranks need the mixture start to choose
        {"principal_ranks": (9,)},  # above embedding_dim
    ):
        try:
            MetaRewardModel(embedding_dim=8, **bad)
        except ValueError as error:
            assert "model." in str(error)
        else:
            raise AssertionError(f"accepted {bad}")


def test_leading_directions_and_the_subspace_projection_by_hand():
    # second moment diag(1, 9, 4): leading directions e2, then e3, then e1
    basis = leading_directions(torch.diag(torch.tensor([1.0, 9.0, 4.0])), 2)
    torch.testing.assert_close(
        basis.abs(), torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).double()
    )
    projection = PrincipalSubspace(3, 2)
    projection.basis.copy_(basis)
    weight = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(projection(weight), weight)  # rank 0: free
    projection.rank.fill_(1)
    torch.testing.assert_close(projection(weight), torch.tensor([[0.0, 2.0, 0.0]]))
    projection.rank.fill_(2)
    torch.testing.assert_close(projection(weight), torch.tensor([[0.0, 2.0, 3.0]]))


def test_the_mixture_start_chooses_a_rank_and_the_layer_stays_in_its_span():
    dm, model = mixture_model(principal_ranks=(2, 0), adaptation="posterior", inner_lr=1.0)
    assert int(model.base_rewards.net.parametrizations.weight[0].rank) in (0, 2)  # a candidate
    # rank 2 forced, so that the projection is not the identity (rank 0 would compare the
    # weight with itself)
    _, model = mixture_model(principal_ranks=(2,), adaptation="posterior", inner_lr=1.0)
    parametrized = model.base_rewards.net.parametrizations.weight
    subspace = parametrized[0]
    assert int(subspace.rank) == 2
    basis = subspace.basis[:, :2]
    torch.testing.assert_close(basis.T @ basis, torch.eye(2), atol=1e-5, rtol=0)
    # the mixture start leaves the free weight in the span; wherever training moves it, the
    # layer's weight is its projection on the 2 leading directions
    free = parametrized.original
    torch.testing.assert_close(free, free @ basis @ basis.T, atol=1e-5, rtol=0)
    with torch.no_grad():
        free.add_(torch.randn(free.shape, generator=torch.Generator().manual_seed(0)))
    projected = free @ basis @ basis.T
    assert (free - projected).abs().max() > 0.1  # now it has parts outside the span
    weight = model.base_rewards.net.weight
    torch.testing.assert_close(weight, projected, atol=1e-5, rtol=0)
    # the rank is in the state dict, so a checkpoint restores the restriction
    state = model.state_dict()
    assert int(state["base_rewards.net.parametrizations.weight.0.rank"]) == 2
    fresh = MetaRewardModel(
        embedding_dim=8, num_base_rewards=2, mixture_warm_start=True, principal_ranks=(2,)
    )
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.base_rewards.net.weight, weight)
    # rank 1 forced: the base functions lie on one line through the origin
    _, forced = mixture_model(principal_ranks=(1,), adaptation="posterior", inner_lr=1.0)
    rows = forced.base_rewards.net.weight
    assert torch.linalg.matrix_rank(rows, atol=1e-5) == 1


def test_mrm_fit_with_posterior_mixture_and_ranks_then_test_the_checkpoint(tiny_args, tmp_path):
    settings = [
        "--model.combination", "softmax",
        "--model.adaptation", "posterior",
        "--model.inner_lr", "1.0",
        "--model.mixture_warm_start", "true",
        "--model.principal_ranks", "[4, 0]",
        "--test_after_fit", "true",
    ]  # fmt: skip
    cli = cli_main(["fit", *tiny_args, *settings])
    results = json.loads((tmp_path / "runs/tiny/version_0/results.json").read_text())
    assert results["selected_adaptation"]["adaptation"] == "posterior"
    rank = int(cli.model.base_rewards.net.parametrizations.weight[0].rank)
    assert rank in (0, 4)
    # what the start chose is saved with the results (and printed)
    assert results["selected_adaptation"]["principal_rank"] == rank
    l2 = results["selected_adaptation"]["mixture_l2"]  # a float32 buffer in the checkpoint
    assert any(l2 == pytest.approx(grid, rel=1e-6) for grid in (3e-4, 1e-3, 3e-3))
    # the checkpoint, tested on its own, restores the rank restriction and gives the same numbers
    again = cli_main(["test", *tiny_args, *settings[:-2], "--ckpt_path", results["checkpoint"]])
    assert int(again.model.base_rewards.net.parametrizations.weight[0].rank) == rank
    assert again.trainer.callback_metrics["test/user_acc"] == pytest.approx(
        results["metrics"]["test/user_acc"]
    )


def test_a_checkpoint_from_before_a_buffer_existed_still_loads():
    model = MetaRewardModel(embedding_dim=8, num_base_rewards=2)
    state = model.state_dict()
    del state["mixture_l2"], state["warm_start_comparisons"]  # written by older code
    fresh = MetaRewardModel(embedding_dim=8, num_base_rewards=2)
    fresh.load_state_dict(state)
    assert float(fresh.mixture_l2) == -1.0 and int(fresh.warm_start_comparisons) == 0
    del state["w0"]  # a missing parameter is still an error
    with pytest.raises(RuntimeError, match="w0"):
        fresh.load_state_dict(state)
