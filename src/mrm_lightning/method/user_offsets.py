"""Every user's own Bradley-Terry correction to a shared reward, fitted for all users at once.

A user's margin on a pair is ``offset + z . delta_u``: ``offset`` the shared model's margin,
``z`` a few features of the pair (e.g. its difference projected on leading directions) and
``delta_u`` the user's own weights, fitted on the user's pairs alone:

    delta_u = argmin mean_{p of u} softplus(-(offset_p + z_p . delta)) + l2 * |delta|^2

(``softplus(-m) = -log sigmoid(m)``, the Bradley-Terry loss). The problem is convex and small,
so damped Newton steps solve it for every user together on padded ``[U, n, r]`` tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pad_by_user(user: Tensor, num_users: int) -> tuple[Tensor, Tensor]:
    """``[U, n]`` the pair indices of each user (n = most pairs of one user; padding points at
    pair 0) and the ``[U, n]`` bool mask of real entries."""
    order = torch.argsort(user, stable=True)
    counts = torch.bincount(user, minlength=num_users)
    width = int(counts.max()) if len(user) else 0
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(len(user)) - starts[user[order]]
    index = torch.zeros(num_users, width, dtype=torch.long)
    mask = torch.zeros(num_users, width, dtype=torch.bool)
    index[user[order], position] = order
    mask[user[order], position] = True
    return index, mask


def fit_user_offsets(
    features: Tensor,
    offset: Tensor,
    user: Tensor,
    num_users: int,
    l2: float,
    steps: int = 8,
) -> Tensor:
    """``[U, r]`` each user's ``delta_u`` (module docstring) from ``[P, r]`` features, ``[P]``
    shared margins and ``[P]`` users; users without pairs get zeros. ``l2`` must be > 0."""
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    index, mask = pad_by_user(user, num_users)
    z = features.double()[index] * mask[..., None]  # [U, n, r]
    o = offset.double()[index]  # [U, n]
    weight = mask.double() / mask.sum(1, keepdim=True).clamp_min(1)  # [U, n] 1/n_u on real pairs
    rank = features.shape[1]
    delta = torch.zeros(num_users, rank, dtype=torch.float64)
    eye = torch.eye(rank, dtype=torch.float64)

    def loss(d: Tensor) -> Tensor:  # [U]
        margin = o + (z @ d[..., None])[..., 0]
        return (weight * F.softplus(-margin)).sum(1) + l2 * d.square().sum(1)

    current = loss(delta)
    for _ in range(steps):
        margin = o + (z @ delta[..., None])[..., 0]  # [U, n]
        p = torch.sigmoid(margin)
        grad = -((weight * (1 - p))[:, None, :] @ z)[:, 0] + 2 * l2 * delta  # [U, r]
        curvature = weight * p * (1 - p)  # [U, n]
        hess = (z * curvature[..., None]).transpose(1, 2) @ z + 2 * l2 * eye  # [U, r, r]
        step = torch.cholesky_solve(grad[..., None], torch.linalg.cholesky(hess))[..., 0]
        scale = torch.ones(num_users, 1, dtype=torch.float64)
        for _ in range(10):  # halve the step of any user whose loss would rise
            candidate = delta - scale * step
            new = loss(candidate)
            worse = new > current + 1e-12
            if not worse.any():
                break
            scale = torch.where(worse[:, None], scale / 2, scale)
        delta = torch.where(worse[:, None], delta, candidate)
        current = torch.where(worse, current, new)
    return delta
