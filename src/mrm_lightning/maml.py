"""The MAML inner loop, for all users of a meta-batch at once.

Semantics follow learn2learn's ``MAML`` (which cannot be installed with this stack; see the
README): the learner (here, the user weights w) is cloned from the meta-parameter w0, inner
steps are differentiable, ``first_order`` drops the second-order terms. Only w adapts; the
base reward functions are fixed inside the loop, so their outputs phi(h) are computed once per
response and the inner loop is K-dimensional algebra, whatever the encoder size.

Each user's adapted weights depend only on that user's pairs, so the gradient of the SUM of
per-user losses with respect to the stacked ``[B, K]`` weights is exactly each user's own
gradient: one autograd call adapts the whole meta-batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .heads import Combination, combine
from .losses import bradley_terry_loss

InnerOptimizer = Literal["sgd", "adam"]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def pair_margins(
    weights: Tensor, chosen_base: Tensor, rejected_base: Tensor | None, combination: Combination
) -> Tensor:
    """r_w(chosen) - r_w(rejected): ``[B, K]``, ``[B, P, K]`` x2 -> ``[B, P]``.

    ``rejected_base`` None: ``chosen_base`` holds the base rewards of each pair's
    chosen-minus-rejected embedding. Both combinations are linear in the base rewards, so this
    is the same margin whenever the base functions are linear (phi(c - r) = phi(c) - phi(r)).
    """
    if rejected_base is None:
        return combine(weights, chosen_base, combination)
    return combine(weights, chosen_base, combination) - combine(weights, rejected_base, combination)


def adapt(
    w0: Tensor,
    chosen_base: Tensor,
    rejected_base: Tensor | None,
    mask: Tensor,
    *,
    steps: int,
    lr: float,
    optimizer: InnerOptimizer = "sgd",
    first_order: bool = False,
    combination: Combination = "softmax",
    proximal: float = 0.0,
) -> Tensor:
    """Adapt w0 to each user's support pairs with a few differentiable steps.

    Args:
        w0: ``[K]`` shared initial weights (the meta-parameter).
        chosen_base: ``[B, S, K]`` base rewards of each user's chosen support responses.
        rejected_base: ``[B, S, K]`` the same for the rejected responses; None where
            ``chosen_base`` holds the pairs' differences (see :func:`pair_margins`).
        mask: ``[B, S]`` True for real support pairs (the rest is padding).
        steps: number of inner steps; 0 returns w0 for every user.
        lr: inner learning rate.
        optimizer: ``"sgd"`` (classic MAML) or ``"adam"`` (the reference code; fresh state per
            user, so its first step is about ``lr * sign(gradient)``).
        first_order: if True, inner gradients are treated as constants (FOMAML): cheaper, and
            the base functions then receive no gradient through the inner loop.
        combination: how weights mix the base rewards.
        proximal: strength of a pull back towards w0: each user's inner loss gets
            ``proximal / 2 * |w - w0|^2``, so more steps cannot carry a user far from the prior.

    Returns:
        ``[B, K]`` adapted weights, differentiable w.r.t. w0 (and, second-order, the base rewards).
    """
    batch = chosen_base.shape[0]
    weights = anchor = w0.expand(batch, -1)  # a "clone" per user that keeps the path to w0
    if steps == 0 or lr == 0:
        return weights
    if not weights.requires_grad:  # e.g. w0 frozen at inference: adapt a detached copy
        weights = weights.detach().requires_grad_(True)
    first_moment = second_moment = None
    for step in range(1, steps + 1):
        margins = pair_margins(weights, chosen_base, rejected_base, combination)
        # sum over users: each row of `weights` only sees its own user's loss (see module doc).
        loss = bradley_terry_loss(margins, mask).sum()
        if proximal:
            loss = loss + 0.5 * proximal * (weights - anchor).square().sum()
        (grad,) = torch.autograd.grad(loss, weights, create_graph=not first_order)
        if optimizer == "sgd":
            update = grad
        elif optimizer == "adam":
            beta1, beta2 = ADAM_BETAS
            first_moment = (
                (1 - beta1) * grad
                if first_moment is None
                else (beta1 * first_moment + (1 - beta1) * grad)
            )
            second_moment = (
                (1 - beta2) * grad * grad
                if second_moment is None
                else (beta2 * second_moment + (1 - beta2) * grad * grad)
            )
            m_hat = first_moment / (1 - beta1**step)
            v_hat = second_moment / (1 - beta2**step)
            # eps inside the root (not beside it) keeps second-order gradients finite where a
            # gradient entry is exactly 0. Same step as torch.optim.Adam unless |grad| ~ eps.
            update = m_hat / torch.sqrt(v_hat + ADAM_EPS**2)
        else:
            raise ValueError(f"inner optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        weights = weights - lr * update
    return weights


def adapt_per_user(
    w0: Tensor,
    chosen_base: Tensor,
    rejected_base: Tensor | None,
    mask: Tensor,
    **inner: object,
) -> Tensor:
    """Reference implementation: one user at a time, on that user's unpadded pairs only.

    What a clone-and-adapt loop (learn2learn style) computes; kept to test the batched
    :func:`adapt` against, and as the baseline of ``experiments/bench_maml.py``.
    """
    adapted = []
    for user in range(chosen_base.shape[0]):
        real = mask[user]
        w_user = adapt(
            w0.clone(),
            chosen_base[user, real].unsqueeze(0),
            None if rejected_base is None else rejected_base[user, real].unsqueeze(0),
            real[real].unsqueeze(0),
            **inner,  # type: ignore[arg-type]
        )
        adapted.append(w_user[0])
    return torch.stack(adapted)
