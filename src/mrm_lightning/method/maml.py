"""The MAML inner loop, for all users of a meta-batch at once.

Semantics follow learn2learn's ``MAML`` (which cannot be installed with this stack; see the
README): the learner (here, the user weights w) is cloned from the meta-parameter w0, inner
steps are differentiable, ``first_order`` drops the second-order terms. Only w adapts; the
base reward functions are fixed inside the loop, so their outputs phi(h) are computed once per
response and the inner loop is K-dimensional algebra, whatever the encoder size.

Each user's adapted weights depend only on that user's pairs, so the gradient of the SUM of
per-user losses with respect to the stacked ``[B, K]`` weights is exactly each user's own
gradient: one computation adapts the whole meta-batch. That gradient is written out in closed
form (:func:`inner_gradient`, checked against autograd in the tests) rather than asked of
``torch.autograd.grad(create_graph=True)``: a handful of ``[B, K]`` operations instead of a
backward pass that records its own graph, which at the paper's K = 2 cost more than the
algebra itself. The meta-gradient still comes from autograd, through these operations.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .heads import Combination, combine, mixing

InnerOptimizer = Literal["sgd", "adam"]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
_ADAM_EPS = torch.tensor(ADAM_EPS)  # a 0-d tensor for torch.hypot (it takes no Python float)


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


def packed_pair_margins(
    weights: Tensor, base: Tensor, owner: Tensor, combination: Combination
) -> Tensor:
    """:func:`pair_margins` of packed pairs: ``[B, K]`` weights, ``[M, K]`` base rewards of
    each pair's chosen-minus-rejected embedding and ``[M]`` its user's row -> ``[M]``
    margins, with no ``[B, P]`` padding in between."""
    return (base * mixing(weights, combination).index_select(0, owner)).sum(-1)


def inner_gradient(
    weights: Tensor,
    chosen_base: Tensor,
    rejected_base: Tensor | None,
    pair_weight: Tensor,
    combination: Combination,
) -> Tensor:
    """d/dweights of the users' summed Bradley-Terry losses on their pairs, ``[B, K]``.

    What ``torch.autograd.grad`` gives for ``bradley_terry_loss(pair_margins(...), mask).sum()``,
    in closed form; ``pair_weight`` ``[B, P]`` is :func:`loss_pair_weights` of the mask. Per
    user: ``dL/dm_p = -sigmoid(-m_p) * mask_p / n`` and
    ``dL/dmix = sum_p dL/dm_p * (phi_c - phi_r)_p``, then back through the combination
    (softmax: ``mix * (g - <g, mix>)``, as autograd does it)."""
    # torch.bmm, not `@`: matmul's shape handling costs more than these [B, P, K] products
    mix = mixing(weights, combination)  # [B, K]
    column = mix.unsqueeze(-1)  # [B, K, 1]
    margins = torch.bmm(chosen_base, column)  # [B, P, 1]: pair_margins with the mix at hand
    if rejected_base is not None:
        margins = margins - torch.bmm(rejected_base, column)
    margins = margins.squeeze(-1)  # [B, P]
    per_pair = (torch.sigmoid(-margins) * pair_weight).unsqueeze(1)  # [B, 1, P] dL/dm
    grad_mix = torch.bmm(per_pair, chosen_base)  # [B, 1, K]
    if rejected_base is not None:
        grad_mix = grad_mix - torch.bmm(per_pair, rejected_base)
    grad_mix = grad_mix.squeeze(1)  # [B, K]
    if combination == "linear":
        return grad_mix
    # mix * (grad_mix - <grad_mix, mix>): softmax's backward, the operation autograd uses
    return torch._softmax_backward_data(grad_mix, mix, -1, mix.dtype)


def loss_pair_weights(mask: Tensor) -> Tensor:
    """``[B, P]`` -mask / (the user's pair count): d(Bradley-Terry loss)/d(-log sigmoid(m))
    with the sign of d(-log sigmoid(m))/dm folded in (a user with no pairs: zeros)."""
    return mask / mask.sum(-1, keepdim=True).clamp_min(1).neg()


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
    pair_weight = loss_pair_weights(mask)  # [B, S], the same every step
    first_moment = second_moment = None
    for step in range(1, steps + 1):
        # each row of `weights` only sees its own user's loss (see the module doc)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not first_order):
            grad = inner_gradient(weights, chosen_base, rejected_base, pair_weight, combination)
            if proximal:  # d/dw of proximal / 2 * |w - w0|^2
                grad = grad + proximal * (weights - anchor)
        if optimizer == "sgd":
            update = grad
        elif optimizer == "adam":
            beta1, beta2 = ADAM_BETAS
            # eps inside the root (not beside it) keeps second-order gradients finite where a
            # gradient entry is exactly 0. Same step as torch.optim.Adam unless |grad| ~ eps.
            if first_moment is None:  # fresh state: bias-corrected, the moments are g and g^2
                update = grad / torch.hypot(grad, _ADAM_EPS)  # sqrt(g^2 + eps^2)
                if step < steps:
                    first_moment, second_moment = (1 - beta1) * grad, (1 - beta2) * grad * grad
            else:
                first_moment = beta1 * first_moment + (1 - beta1) * grad
                second_moment = beta2 * second_moment + (1 - beta2) * grad * grad
                m_hat = first_moment / (1 - beta1**step)
                v_hat = second_moment / (1 - beta2**step)
                update = m_hat / torch.sqrt(v_hat + ADAM_EPS**2)
        else:
            raise ValueError(f"inner optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        weights = torch.sub(weights, update, alpha=lr)  # weights - lr * update
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
