"""Seeded, leakage-free splits: users into seen / unseen, each user's pairs into train / val / test.

Pairs are split by *unit* (a post, a conversation, an item pair), never pair by pair: two pairs
about the same text always land on the same side, so nothing a model saw in training reappears
in validation or test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .preferences import PreferenceData

TRAIN, VAL, TEST, UNUSED = 0, 1, 2, -1


@dataclass
class SplitSummary:
    """What a split did, for the log and for tests."""

    seen_users: Tensor
    unseen_users: Tensor
    dropped_users: Tensor
    pair_split: Tensor  # [P] TRAIN / VAL / TEST / UNUSED (over a cap, or a dropped user)


def split_users(
    num_users: int, unseen_fraction: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Shuffle users and put ``round(unseen_fraction * N)`` of them in the unseen group."""
    if not 0.0 <= unseen_fraction < 1.0:
        raise ValueError(f"unseen_fraction must be in [0, 1), got {unseen_fraction}")
    order = torch.randperm(num_users, generator=gen)
    num_unseen = round(unseen_fraction * num_users)
    return order[num_unseen:].sort().values, order[:num_unseen].sort().values


def split_user_units(
    units: Tensor,
    val_fraction: float,
    test_fraction: float,
    max_train_pairs: int | None,
    gen: torch.Generator,
) -> Tensor:
    """Assign each of one user's pairs to TRAIN / VAL / TEST (or UNUSED past the train cap).

    Fractions count units, not pairs. At least one unit goes to test and one to train (when
    the user has >= 2 units); validation may be empty. The train cap keeps whole units, in
    shuffled order, while the total stays within ``max_train_pairs``.

    Args:
        units: ``[n]`` unit id of each of the user's pairs.
    """
    distinct, pair_unit = torch.unique(units, return_inverse=True)
    num_units = len(distinct)
    order = torch.randperm(num_units, generator=gen)
    num_test = min(max(1, round(test_fraction * num_units)), max(num_units - 1, 0))
    num_val = min(round(val_fraction * num_units), num_units - num_test - 1)
    unit_split = torch.full((num_units,), TRAIN, dtype=torch.long)
    unit_split[order[:num_test]] = TEST
    unit_split[order[num_test : num_test + max(num_val, 0)]] = VAL
    if max_train_pairs is not None:
        pairs_per_unit = torch.bincount(pair_unit, minlength=num_units)
        kept = 0
        for unit in order[num_test + max(num_val, 0) :].tolist():
            if kept + int(pairs_per_unit[unit]) <= max_train_pairs:
                kept += int(pairs_per_unit[unit])
            else:
                unit_split[unit] = UNUSED
    return unit_split[pair_unit]


def split_pairs(
    data: PreferenceData,
    *,
    unseen_fraction: float,
    val_fraction: float,
    test_fraction: float,
    max_train_pairs_seen: int | None,
    max_train_pairs_unseen: int | None,
    min_pairs_per_user: int,
    seed: int,
) -> SplitSummary:
    """The generic protocol: seeded user split, then a per-user unit split with caps."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.bincount(data.user, minlength=data.num_users)
    kept = (counts >= min_pairs_per_user).nonzero().flatten()
    dropped = (counts < min_pairs_per_user).nonzero().flatten()
    seen_pos, unseen_pos = split_users(len(kept), unseen_fraction, gen)
    seen, unseen = kept[seen_pos], kept[unseen_pos]
    pair_split = torch.full((data.num_pairs,), UNUSED, dtype=torch.long)
    order = torch.argsort(data.user, stable=True)
    bounds = torch.cumsum(counts, 0)
    is_seen = torch.zeros(data.num_users, dtype=torch.bool)
    is_seen[seen] = True
    for user in kept.tolist():  # fixed order: the same seed gives the same split
        rows = order[bounds[user] - counts[user] : bounds[user]]
        cap = max_train_pairs_seen if is_seen[user] else max_train_pairs_unseen
        pair_split[rows] = split_user_units(data.unit[rows], val_fraction, test_fraction, cap, gen)
    return SplitSummary(seen, unseen, dropped, pair_split)
