"""A latent-class Bradley-Terry model: users as a mixture of K reward directions, fitted by EM.

Each user belongs to one of K classes; a class ``k`` prefers ``chosen`` over ``rejected`` with
probability ``sigmoid(v_k . d)`` (``d`` the chosen-minus-rejected embedding), and classes are
drawn with proportions ``pi``. EM alternates:

- E-step: each user's posterior over classes from ALL its pairs at once,
  ``log pi_k + sum_pairs log sigmoid(v_k . d)``;
- M-step: each class's direction, a Bradley-Terry fit on every pair weighted by its user's
  posterior for that class (L-BFGS, warm-started), L2 ``l2 * |v_k|^2``.

Used by :class:`mrm_lightning.training.module.MetaRewardModel` (``mixture_warm_start``) to start the
base reward functions where users' tastes cluster: gradient meta-training from a random start finds
such directions slowly, and a new user's few pairs then only have to pick among them (the softmax
head's adaptation). Pure functions over tensors; the module picks ``l2`` on validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .bradley_terry import user_level_accuracy


@dataclass(frozen=True)
class PreferenceMixture:
    """K class directions ``components [K, D]``, their ``proportions [K]`` (summing to 1),
    and the training log-likelihood (summed over users) EM reached."""

    components: Tensor
    proportions: Tensor
    log_likelihood: float


def class_log_likelihoods(
    differences: Tensor, user_index: Tensor, num_users: int, components: Tensor
) -> Tensor:
    """``[U, K]``: sum over each user's pairs of ``log sigmoid(v_k . d)``.

    Args:
        differences: ``[P, D]`` chosen-minus-rejected embeddings.
        user_index: ``[P]`` each pair's user, in ``0 .. num_users - 1``.
        num_users: U.
        components: ``[K, D]`` class directions.
    """
    per_pair = F.logsigmoid(differences @ components.T)  # [P, K]
    totals = torch.zeros(num_users, len(components), dtype=per_pair.dtype)
    return totals.index_add_(0, user_index, per_pair)


def posterior(log_likelihoods: Tensor, proportions: Tensor) -> Tensor:
    """``[U, K]`` each user's posterior over classes (rows sum to 1)."""
    return torch.softmax(log_likelihoods + proportions.clamp_min(1e-12).log(), dim=-1)


def weighted_fit(
    differences: Tensor, pair_weights: Tensor, l2: float, start: Tensor, max_iter: int = 25
) -> Tensor:
    """M-step: ``argmin_V -sum_{p,k} a_pk log sigmoid(v_k . d_p) / P + l2 |V|^2`` (convex,
    separable over k), by L-BFGS from ``start [K, D]``; ``pair_weights`` is ``a [P, K]``."""
    directions = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([directions], max_iter=max_iter, line_search_fn="strong_wolfe")
    count = max(len(differences), 1)

    def closure() -> Tensor:
        optimizer.zero_grad()
        fit = -(pair_weights * F.logsigmoid(differences @ directions.T)).sum() / count
        loss = fit + l2 * directions.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return directions.detach()


def fit_preference_mixture(
    differences: Tensor,
    user_index: Tensor,
    num_components: int,
    l2: float,
    *,
    iterations: int = 30,
    restarts: int = 3,
    tolerance: float = 1e-5,
    generator: torch.Generator | None = None,
) -> PreferenceMixture:
    """EM for the latent-class Bradley-Terry model; the best of ``restarts`` random starts.

    Each start draws every user's initial posterior at random (so the classes start apart) and
    runs at most ``iterations`` EM rounds, stopping once the mean log-likelihood per pair gains
    less than ``tolerance``; the start with the highest training log-likelihood is returned.

    Args:
        differences: ``[P, D]`` chosen-minus-rejected embeddings (float32 or float64).
        user_index: ``[P]`` each pair's user, in ``0 .. U - 1`` (every user with a pair).
        num_components: K classes.
        l2: the M-step's L2 strength (per class direction, on the mean loss per pair).
    """
    if num_components < 1:
        raise ValueError(f"num_components must be >= 1, got {num_components}")
    if not len(differences):
        raise ValueError("fit_preference_mixture needs at least one pair")
    num_users = int(user_index.max()) + 1
    dtype = differences.dtype
    best: PreferenceMixture | None = None
    for _ in range(restarts):
        responsibilities = torch.rand(num_users, num_components, generator=generator, dtype=dtype)
        responsibilities /= responsibilities.sum(-1, keepdim=True)
        components = torch.zeros(num_components, differences.shape[1], dtype=dtype)
        previous = -float("inf")
        for _ in range(iterations):
            proportions = responsibilities.mean(0)
            components = weighted_fit(differences, responsibilities[user_index], l2, components)
            log_likelihoods = class_log_likelihoods(differences, user_index, num_users, components)
            responsibilities = posterior(log_likelihoods, proportions)
            total = float(torch.logsumexp(log_likelihoods + proportions.log(), -1).sum())
            if total - previous < tolerance * len(differences):
                break
            previous = total
        if best is None or total > best.log_likelihood:
            best = PreferenceMixture(components, responsibilities.mean(0), total)
    assert best is not None, "restarts must be >= 1"
    return best


def mixture_margins(
    mixture: PreferenceMixture,
    fit_differences: Tensor,
    fit_user_index: Tensor,
    differences: Tensor,
    user_index: Tensor,
    num_users: int,
) -> Tensor:
    """``[P]`` margins of held-out pairs for users known only by a few pairs: each user's reward
    is the posterior-weighted mix of the class directions, the posterior from its ``fit`` pairs
    (the prior ``proportions`` for a user without any)."""
    evidence = class_log_likelihoods(fit_differences, fit_user_index, num_users, mixture.components)
    weights = posterior(evidence, mixture.proportions)  # [U, K]
    return ((differences @ mixture.components.T) * weights[user_index]).sum(-1)


def choose_mixture(
    train: tuple[Tensor, Tensor],
    validation_fit: tuple[Tensor, Tensor],
    validation: tuple[Tensor, Tensor],
    num_components: int,
    l2_grid: tuple[float, ...],
    generator: torch.Generator | None = None,
) -> tuple[PreferenceMixture, float, list[float]]:
    """Fit one mixture per L2 in ``l2_grid`` on ``train`` and keep the best on validation users.

    Each argument is ``(differences [P, D], user_index [P])``. Validation users are scored as
    new users are: their posterior from their ``validation_fit`` pairs, their user-level
    accuracy on their ``validation`` pairs (the two share one user numbering). Returns the
    chosen mixture, its L2 and every L2's validation accuracy (a tie goes to the larger L2).
    """
    numbers = torch.cat([validation_fit[1], validation[1]])
    num_users = int(numbers.max()) + 1 if len(numbers) else 0
    fitted, accuracies = [], []
    for l2 in l2_grid:
        mixture = fit_preference_mixture(*train, num_components, l2, generator=generator)
        margins = mixture_margins(mixture, *validation_fit, *validation, num_users)
        fitted.append(mixture)
        accuracies.append(user_level_accuracy(margins, validation[1])[0])

    def key(i: int) -> tuple[float, float]:  # NaN (no validation user) never wins
        return (-math.inf if math.isnan(accuracies[i]) else accuracies[i], l2_grid[i])

    best = max(range(len(l2_grid)), key=key)
    return fitted[best], l2_grid[best], accuracies
