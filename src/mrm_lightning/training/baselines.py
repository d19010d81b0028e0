"""Reference points for MRM: a global (non-personalized) reward model and the oracle.

The global model is a Bradley-Terry linear reward r(h) = v . h fitted on all seen users'
training pairs pooled, its L2 strength chosen on validation pairs. It is exactly what MRM's
linear head can express with one weight vector for everybody, so MRM minus global is the value
of personalization. :func:`global_reward_model` is THE global model of a run: MRM's warm start
(its fallback) and the report's global row are this one fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..data.gathering import gather_differences
from ..data.preferences import PreferenceData
from ..data.splits import TRAIN
from ..method.bradley_terry import fit_bradley_terry_linear, user_level_accuracy


def pair_differences(data: PreferenceData) -> Tensor:
    """``[P, D]`` float32 embedding of the chosen minus the rejected response of every pair,
    built without a ``[P, D]`` copy of either side (at 100,000 pairs of 4096-d, each is
    1.6 GB)."""
    return gather_differences(data.embeddings, data.chosen, data.rejected)


def mean_square_difference(data: PreferenceData, block: int = 8192) -> float:
    """Mean of the squared entries of :func:`pair_differences`, in float64, summed ``block``
    pairs at a time: never all the differences at once, nor a float64 copy of them (at
    100,000 pairs of 4096-d, 1.6 GB and 3.2 GB)."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, data.num_pairs, block):
        chosen, rejected = data.chosen[start : start + block], data.rejected[start : start + block]
        total += gather_differences(data.embeddings, chosen, rejected).double().square().sum()
    count = data.num_pairs * data.embedding_dim
    return float(total) / count if count else 0.0


def difference_second_moment(data: PreferenceData, block: int = 8192) -> Tensor:
    """``[D, D]`` float64 mean of ``d d^T`` over the pairs' differences, ``block`` pairs at a
    time (their principal directions, :mod:`mrm_lightning.method.subspace`)."""
    total = torch.zeros(data.embedding_dim, data.embedding_dim, dtype=torch.float64)
    for start in range(0, data.num_pairs, block):
        chosen, rejected = data.chosen[start : start + block], data.rejected[start : start + block]
        differences = gather_differences(data.embeddings, chosen, rejected).double()
        total += differences.T @ differences
    return total / max(data.num_pairs, 1)


def fit_global_reward(
    train: PreferenceData,
    val: PreferenceData,
    l2_grid: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
) -> tuple[Tensor, float]:
    """Fit one linear reward on pooled training pairs; pick L2 by user-level validation accuracy."""
    train_diff, val_diff = pair_differences(train), pair_differences(val)
    best: tuple[float, float, Tensor] | None = None
    for l2 in l2_grid:
        weights = fit_bradley_terry_linear(train_diff, l2)
        val_acc, _ = user_level_accuracy(val_diff @ weights, val.user)
        if best is None or val_acc > best[0]:
            best = (val_acc, l2, weights)
    assert best is not None, "l2_grid is empty"
    return best[2], best[1]


def evaluate_linear_reward(weights: Tensor, pairs: PreferenceData) -> tuple[float, int]:
    """User-level accuracy of one fixed linear reward on some pairs."""
    return user_level_accuracy(pair_differences(pairs) @ weights, pairs.user)


def sample_pairs(pairs: PreferenceData, at_most: int | None, seed: int = 0) -> PreferenceData:
    """A seeded sample of at most ``at_most`` of ``pairs`` (all of them: fewer, or None)."""
    if at_most is None or pairs.num_pairs <= at_most:
        return pairs
    pick = torch.randperm(pairs.num_pairs, generator=torch.Generator().manual_seed(seed))
    return pairs.subset(pick[:at_most])


def global_reward_model(datamodule, at_most: int | None = None) -> tuple[Tensor, float]:
    """The run's global model: one linear reward on the seen users' training pairs pooled (a
    seeded sample of at most ``at_most``), L2 chosen on the validation pairs; its weights on
    raw embeddings and the L2."""
    train = sample_pairs(datamodule.pairs(TRAIN, datamodule.split.seen_users), at_most)
    return fit_global_reward(train, datamodule.validation_pairs())
