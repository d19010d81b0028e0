"""Per-user Bradley-Terry loss and the Robust Personalization Objective's weights.

Everything here is a pure function over tensors, so it can be tested against numbers worked
out by hand and reused by the module, the RPO callback, baselines and benchmarks alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_user_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the last (pair) axis counting only ``mask`` entries; 0 for users with none.

    Args:
        values: ``[..., P]`` per-pair values.
        mask: ``[..., P]`` bool, True where the pair exists (the rest is padding).
    """
    # clamp: a user with no pairs in this set contributes 0, never NaN (0 / 0). (A bool mask
    # multiplies as 0 / 1 and counts as an integer: no float copy of it is made.)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def bradley_terry_loss(margin: Tensor, mask: Tensor) -> Tensor:
    """Per-user mean of ``-log sigmoid(r(chosen) - r(rejected))``.

    Args:
        margin: ``[B, P]`` reward of the chosen minus reward of the rejected response.
        mask: ``[B, P]`` bool, True for real pairs.

    Returns:
        ``[B]`` one loss per user.
    """
    # logsigmoid is the numerically stable form of log(sigmoid(x)) for large |x|.
    return masked_user_mean(-F.logsigmoid(margin), mask)


def packed_bradley_terry_loss(margin: Tensor, owner: Tensor, pairs: Tensor) -> Tensor:
    """:func:`bradley_terry_loss` of packed pairs: ``[M]`` margins, ``[M]`` each pair's user
    (its row) and ``[B]`` each user's pair count -> ``[B]``, 0 for users with none."""
    total = margin.new_zeros(len(pairs)).index_add(0, owner, F.logsigmoid(margin))
    return total / pairs.clamp_min(1).neg()


def per_user_accuracy(margin: Tensor, mask: Tensor) -> Tensor:
    """Fraction of each user's pairs ranked correctly (strictly positive margin). ``[B]``."""
    return masked_user_mean((margin > 0).to(margin.dtype), mask)


def rpo_threshold(losses: Tensor, tail_fraction: float) -> Tensor:
    """tau = quantile(losses, 1 - rho): users above it form the worst-fitted tail.

    Computed on detached losses: tau is a threshold, not a path for gradients. This keeps the
    objective identical whether the quantile is taken in one process or over gathered losses
    of many (DDP), where other processes' losses carry no gradient anyway.
    """
    if not 0.0 < tail_fraction <= 1.0:
        raise ValueError(f"tail_fraction (rho) must be in (0, 1], got {tail_fraction}")
    return torch.quantile(losses.detach().float(), 1.0 - tail_fraction).to(losses.dtype)


def rpo_tail_mask(losses: Tensor, tail_fraction: float) -> Tensor:
    """1 for exactly ``ceil(rho * B)`` users, those with the largest losses (ties go to the
    earlier user), 0 for the rest: the hard tail. Unlike ``1[L_i > tau]`` it keeps every user
    at rho = 1 and one of two tied users at rho = 1/2. ``[B]``, the losses' dtype."""
    if not 0.0 < tail_fraction <= 1.0:
        raise ValueError(f"tail_fraction (rho) must be in (0, 1], got {tail_fraction}")
    count = min(len(losses), math.ceil(tail_fraction * len(losses) - 1e-9))
    order = torch.argsort(losses.detach(), descending=True, stable=True)
    mask = torch.zeros_like(losses)
    mask[order[:count]] = 1.0
    return mask


def rpo_weights(
    losses: Tensor, threshold: Tensor, smoothness: float, tail_fraction: float | None = None
) -> Tensor:
    """a_i = sigmoid((L_i - tau) / gamma); when gamma <= 0, the hard tail mask of
    :func:`rpo_tail_mask`, which needs ``tail_fraction`` (rho).

    Args:
        losses: ``[B]`` post-adaptation query losses.
        threshold: scalar tau from :func:`rpo_threshold`.
        smoothness: gamma; the smaller, the closer the weights are to the hard tail mask.
    """
    if smoothness <= 0:
        if tail_fraction is None:
            raise ValueError("the hard tail mask (smoothness <= 0) needs tail_fraction")
        return rpo_tail_mask(losses, tail_fraction)
    return torch.sigmoid((losses - threshold) / smoothness)


def rpo_objective(
    losses: Tensor,
    tail_fraction: float,
    smoothness: float,
    detach_weights: bool = False,
    reduction: str = "sum",
) -> Tensor:
    """sum_i a_i * L_i (or its mean over users) for the users of one meta-batch.

    The single-process form; :class:`mrm_lightning.training.rpo.RobustPersonalization`
    computes the same quantity with the threshold taken over the global (all-process) meta-batch.
    """
    tau = rpo_threshold(losses, tail_fraction)
    weights = rpo_weights(losses, tau, smoothness, tail_fraction)
    if detach_weights:
        weights = weights.detach()
    total = (weights * losses).sum()
    return total / losses.numel() if reduction == "mean" else total
