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

    Fractions count units, not pairs. At least one unit goes to test (unless test_fraction is
    0) and one to train (when the user has >= 2 units); validation may be empty. The train cap
    keeps whole units, in shuffled order, while the total stays within ``max_train_pairs``.

    Args:
        units: ``[n]`` unit id of each of the user's pairs.
    """
    distinct, pair_unit = torch.unique(units, return_inverse=True)
    num_units = len(distinct)
    order = torch.randperm(num_units, generator=gen)
    least = 1 if test_fraction > 0 else 0
    num_test = min(max(least, round(test_fraction * num_units)), max(num_units - 1, 0))
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


def split_given(
    units: Tensor,
    given: Tensor,
    val_fraction: float,
    max_train_pairs: int | None,
    gen: torch.Generator,
) -> Tensor:
    """Keep a release's own TEST pairs; carve validation from its TRAIN pairs by unit.

    A training pair whose unit also has a test pair is left UNUSED: a text seen in training
    never comes back at test time, even where the release itself mixes them.
    """
    split = torch.full_like(given, UNUSED)
    split[given == TEST] = TEST
    pool = ((given == TRAIN) & ~torch.isin(units, units[given == TEST])).nonzero().flatten()
    if len(pool):
        split[pool] = split_user_units(units[pool], val_fraction, 0.0, max_train_pairs, gen)
    return split


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
    min_units_per_user: int = 1,
    use_given_split: bool = False,
) -> SplitSummary:
    """Seeded user split, then a per-user unit split with caps.

    With ``use_given_split`` the source's own train / test labels are kept (the paper's TL;DR
    protocol) and users need pairs on both sides; otherwise ``test_fraction`` of each user's
    units is held out. ``min_units_per_user`` counts distinct units (PRISM: conversations).
    """
    if use_given_split and data.given_split is None:
        raise ValueError("data.use_given_split=true, but the source gives no train/test labels")
    gen = torch.Generator().manual_seed(seed)
    counts = torch.bincount(data.user, minlength=data.num_users)
    user_units = torch.unique(torch.stack([data.user, data.unit]), dim=1)[0]
    units = torch.bincount(user_units, minlength=data.num_users)
    eligible = (counts >= min_pairs_per_user) & (units >= min_units_per_user)
    if use_given_split:  # a user needs test pairs and training pairs that survive the leak guard
        user_unit = data.user * (int(data.unit.max()) + 1) + data.unit
        test = data.given_split == TEST
        usable_train = (data.given_split == TRAIN) & ~torch.isin(user_unit, user_unit[test])
        for side in (usable_train, test):
            eligible &= torch.bincount(data.user[side], minlength=data.num_users) > 0
    kept, dropped = eligible.nonzero().flatten(), (~eligible).nonzero().flatten()
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
        if use_given_split:
            pair_split[rows] = split_given(
                data.unit[rows], data.given_split[rows], val_fraction, cap, gen
            )
        else:
            pair_split[rows] = split_user_units(
                data.unit[rows], val_fraction, test_fraction, cap, gen
            )
    return SplitSummary(seen, unseen, dropped, pair_split)
