"""A user's posterior, as profiles carry it, and the questions worth asking them next.

The maths is :mod:`mrm_lightning.method.uncertainty`; here it meets profiles. Which posterior a
model gives follows from how it adapts (:func:`posterior_kind`): gradient steps get a Laplace
posterior around the adapted weights (prior precision :data:`DEFAULT_PRIOR_PRECISION` unless
chosen on validation users: ``experiments/calibration.py``), posterior adaptation the exact
categorical one, and the global model (validation chose no adaptation) none.

Everything is batched over users: ``weights`` ``[B, K]``, ``covariance`` ``[B, K, K]`` (None
for the categorical posterior), base rewards ``[B, N, K]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..method.heads import Combination
from ..method.uncertainty import (
    answered_precision,
    categorical_information_gain,
    categorical_moments,
    categorical_win_probability,
    gaussian_information_gain,
    gaussian_win_probability,
    laplace_precision,
    linearised_moments,
)

# The Gaussian prior's precision around w0: adapted weights over standardised base rewards
# are a few units, so a prior sd of 1 is weak but not flat
DEFAULT_PRIOR_PRECISION = 1.0


def posterior_kind(inner: dict) -> str | None:
    """``laplace``, ``categorical`` or None, from a model's :meth:`inner_settings`."""
    if inner["warm_start"]:
        return None
    return "categorical" if inner["optimizer"] == "posterior" else "laplace"


def laplace_covariances(
    weights: Tensor,
    differences: Tensor,
    mask: Tensor,
    combination: Combination,
    prior_precision: float,
) -> Tensor:
    """``[B, K, K]`` each user's Laplace covariance, from their support pairs' base-reward
    differences ``[B, P, K]`` (``mask`` ``[B, P]``: real pairs)."""
    precision = laplace_precision(
        weights.double(), differences.double(), mask, combination, prior_precision
    )
    covariance = torch.linalg.inv(precision)
    return (covariance + covariance.transpose(1, 2)) / 2  # symmetric to the last bit


def moments(
    weights: Tensor, covariance: Tensor | None, base: Tensor, combination: Combination
) -> tuple[Tensor, Tensor]:
    """Mean and variance ``[B, N]`` of rewards (or of margins, for pair differences)."""
    if covariance is None:
        return categorical_moments(weights.double(), base.double())
    return linearised_moments(weights.double(), covariance.double(), base.double(), combination)


def win_probabilities(
    weights: Tensor, covariance: Tensor | None, differences: Tensor, combination: Combination
) -> Tensor:
    """``[B, N]`` the probability that the first response of each pair wins, integrated over
    the posterior."""
    if covariance is None:
        return categorical_win_probability(weights.double(), differences.double())
    mean, variance = moments(weights, covariance, differences, combination)
    return gaussian_win_probability(mean, variance)


def information_gains(
    weights: Tensor, covariance: Tensor | None, differences: Tensor, combination: Combination
) -> Tensor:
    """``[B, N]`` the expected information (nats) each pair's answer gives about the weights."""
    if covariance is None:
        return categorical_information_gain(weights.double(), differences.double())
    mean, variance = moments(weights, covariance, differences, combination)
    return gaussian_information_gain(mean, variance)


def choose_pairs(
    weights: Tensor,
    covariance: Tensor | None,
    differences: Tensor,
    available: Tensor,
    count: int,
    combination: Combination,
) -> Tensor:
    """``[B, count]`` indices of the pairs to ask each user, most informative first (-1 where a
    user has fewer available pairs).

    Greedy: the pair of most expected information, then (Laplace) the posterior is narrowed by
    that pair's Gauss-Newton term, which does not depend on its answer, before the next is
    picked, so a batch is informative together and not ``count`` near-copies of one pair.
    The categorical posterior is not narrowed without the answer: its batch is the top
    ``count`` by information gain (ask one at a time and re-adapt to get the sequential choice).
    """
    available = available.clone()
    batch = weights.shape[0]
    chosen = torch.full((batch, count), -1, dtype=torch.long)
    precision = None if covariance is None else torch.linalg.inv(covariance.double())
    rows = torch.arange(batch)
    for step in range(count):
        gains = information_gains(weights, covariance, differences, combination)
        gains = gains.masked_fill(~available, -1.0)
        best = gains.argmax(dim=1)
        has_one = available[rows, best]
        chosen[:, step] = torch.where(has_one, best, torch.full_like(best, -1))
        available[rows, best] = False
        if precision is not None and step + 1 < count:
            picked = differences[rows, best].double() * has_one.unsqueeze(-1)
            precision = answered_precision(weights.double(), precision, picked, combination)
            covariance = torch.linalg.inv(precision)
    return chosen
