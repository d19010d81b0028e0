"""Every user's own Bradley-Terry correction, fitted together, against a fit per user."""

import torch
import torch.nn.functional as F

from mrm_lightning.method.user_offsets import fit_user_offsets, pad_by_user


def test_pad_by_user_by_hand():
    index, mask = pad_by_user(torch.tensor([1, 0, 1, 1]), num_users=3)
    assert index.tolist() == [[1, 0, 0], [0, 2, 3], [0, 0, 0]]
    assert mask.tolist() == [[True, False, False], [True, True, True], [False, False, False]]


def per_user_loss(weights, features, offset, l2=0.05):
    margin = offset.double() + features.double() @ weights
    return F.softplus(-margin).mean() + l2 * weights.square().sum()


def lbfgs_fit(features, offset):
    weights = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = per_user_loss(weights, features, offset)
        value.backward()
        return value

    optimizer.step(closure)
    return weights.detach()


def test_batched_newton_solves_each_users_problem():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(300, 4, generator=gen)
    offset = torch.randn(300, generator=gen)
    user = torch.randint(0, 5, (300,), generator=gen)  # users 5 and 6 have no pairs
    delta = fit_user_offsets(features, offset, user, num_users=7, l2=0.05)
    assert delta[5:].abs().max() == 0
    for u in range(5):
        mine = user == u
        # the problem is convex: a zero gradient is its minimum
        at = delta[u].clone().requires_grad_(True)
        per_user_loss(at, features[mine], offset[mine]).backward()
        assert at.grad.abs().max() < 1e-10
        # and a per-user L-BFGS lands there too (to its own tolerance)
        assert torch.allclose(delta[u], lbfgs_fit(features[mine], offset[mine]), atol=1e-3)


def test_separable_pairs_stay_finite():
    features = torch.tensor([[1.0], [2.0], [3.0]])
    delta = fit_user_offsets(features, torch.zeros(3), torch.zeros(3, dtype=torch.long), 1, 1e-3)
    assert torch.isfinite(delta).all() and delta[0, 0] > 0
