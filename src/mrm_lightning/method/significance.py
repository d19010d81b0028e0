"""Significance on plain tensors: permutation p-values, user labels shuffled (across pairs, or
within items), and the sign test."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def permutation_p_value(observed: float, null: Tensor) -> float:
    """One-sided p-value of ``observed`` against statistics recomputed under permutation:
    ``(1 + #{null >= observed}) / (1 + len(null))``, the +1 counting the observed labelling
    itself (so p is never 0). Exact ties count as at least as large (1e-12 for rounding)."""
    return (1 + int((null >= observed - 1e-12).sum())) / (1 + len(null))


def shuffle_users(user: Tensor, generator: torch.Generator) -> Tensor:
    """``[P]`` user labels permuted across all pairs: every user keeps their number of pairs,
    any pair may go to any user."""
    return user[torch.randperm(len(user), generator=generator)]


def shuffle_users_within_units(user: Tensor, unit: Tensor, generator: torch.Generator) -> Tensor:
    """``[P]`` user labels permuted within each unit (an item or group of items judged by
    several users): the users who judged the unit trade their whole blocks of pairs there.

    A block (one user's pairs in one unit) moves as a whole, so which items were judged
    together, and how often each item was judged, are kept; only who judged them changes.
    """
    keys = torch.stack([unit, user])
    blocks, block_of_pair = torch.unique(keys, dim=1, return_inverse=True)  # sorted by unit
    block_unit, block_user = blocks[0], blocks[1]
    noise = torch.rand(len(block_unit), generator=generator, dtype=torch.float64)
    # sorting by unit, then by noise, shuffles positions within each unit only
    unit_rank = torch.unique(block_unit, return_inverse=True)[1].double()
    order = torch.argsort(unit_rank + noise)
    new_user = block_user[order]
    return new_user[block_of_pair]


def binomial_tail(successes: int, trials: int) -> float:
    """P(X <= successes) for X ~ Binomial(trials, 1/2), exactly (log-space sums)."""
    if trials == 0:
        return 1.0
    logs = [
        math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
        for k in range(successes + 1)
    ]
    top = max(logs)
    log_tail = top + math.log(sum(math.exp(v - top) for v in logs)) - trials * math.log(2)
    return min(1.0, math.exp(log_tail))


def sign_test(helped: int, hurt: int) -> float:
    """Two-sided sign test of helped against hurt (unchanged users dropped): the chance, were
    helping and hurting equally likely, of a split at least this uneven."""
    trials = helped + hurt
    if trials == 0:
        return 1.0
    return min(1.0, 2 * binomial_tail(min(helped, hurt), trials))
