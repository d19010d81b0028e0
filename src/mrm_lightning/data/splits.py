"""Seeded, leak-free splits: users into seen / unseen, pairs into train / val / test.

Pairs are split by *unit* (a post, a conversation, a prompt, a group of rated texts), and units
are assigned to train / validation / test ONCE FOR ALL USERS: a post that one worker judged in
training is on the training side for every worker who judged it, so nothing a model saw in
training reappears in any user's validation or test pairs. Per-user caps apply afterwards, and
a last guard drops any training pair that still shares an embedding row (a text) with a held-out
pair, and any validation pair that shares one with a test pair.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .preferences import PreferenceData

TRAIN, VAL, TEST, UNUSED = 0, 1, 2, -1


@dataclass
class SplitSummary:
    """What a split did, for the log, the report and tests."""

    seen_users: Tensor
    unseen_users: Tensor
    dropped_users: Tensor
    pair_split: Tensor  # [P] TRAIN / VAL / TEST / UNUSED (over a cap, a dropped user, a leak)
    dropped_reasons: Counter = field(default_factory=Counter)  # reason -> users
    leak_guard_pairs: int = 0  # pairs left unused because they shared a text across sides
    #: held out of the seen users: never meta-trained, adapted and scored like unseen users,
    #: for model and adaptation selection (their training pairs get the unseen cap)
    validation_users: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def describe(self) -> str:
        parts = [f"{n} {reason}" for reason, n in sorted(self.dropped_reasons.items())]
        return ", ".join(parts) if parts else "none"


def split_users(
    num_users: int, unseen_fraction: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Shuffle users and put ``round(unseen_fraction * N)`` of them in the unseen group."""
    if not 0.0 <= unseen_fraction < 1.0:
        raise ValueError(f"unseen_fraction must be in [0, 1), got {unseen_fraction}")
    order = torch.randperm(num_users, generator=gen)
    num_unseen = round(unseen_fraction * num_users)
    return order[num_unseen:].sort().values, order[:num_unseen].sort().values


def assign_units(
    num_units: int, val_fraction: float, test_fraction: float, gen: torch.Generator
) -> Tensor:
    """``[num_units]`` TRAIN / VAL / TEST for every unit, the same for all users.

    ``round(test_fraction * U)`` shuffled units go to test, ``round(val_fraction * U)`` to
    validation, the rest to training.
    """
    order = torch.randperm(num_units, generator=gen)
    num_test = round(test_fraction * num_units)
    num_val = min(round(val_fraction * num_units), num_units - num_test)
    side = torch.full((num_units,), TRAIN, dtype=torch.long)
    side[order[:num_test]] = TEST
    side[order[num_test : num_test + num_val]] = VAL
    return side


def assign_given_units(
    units: Tensor, given: Tensor, num_units: int, val_fraction: float, gen: torch.Generator
) -> Tensor:
    """A release's own split: a unit with any TEST pair (of any user) is a test unit; units
    with only TRAIN pairs are the training pool, ``val_fraction`` of which become validation;
    units with neither are UNUSED."""
    side = torch.full((num_units,), UNUSED, dtype=torch.long)
    in_train = torch.zeros(num_units, dtype=torch.bool)
    in_train[units[given == TRAIN]] = True
    pool = in_train.nonzero().flatten()
    side[pool] = TRAIN
    side[units[given == TEST]] = TEST  # wins over TRAIN: the training copies are dropped
    pool = (side == TRAIN).nonzero().flatten()
    pool = pool[torch.randperm(len(pool), generator=gen)]
    side[pool[: round(val_fraction * len(pool))]] = VAL
    return side


def cap_train_pairs(units: Tensor, max_train_pairs: int, gen: torch.Generator) -> Tensor:
    """``[n]`` bool: which of one user's training pairs to keep under the cap.

    Whole units are taken in a seeded random order while the total stays within the cap; a unit
    that does not fit is skipped and smaller ones after it may still fit.
    """
    distinct, pair_unit = torch.unique(units, return_inverse=True)
    pairs_per_unit = torch.bincount(pair_unit, minlength=len(distinct))
    keep_unit = torch.zeros(len(distinct), dtype=torch.bool)
    kept = 0
    for unit in torch.randperm(len(distinct), generator=gen).tolist():
        if kept + int(pairs_per_unit[unit]) <= max_train_pairs:
            kept += int(pairs_per_unit[unit])
            keep_unit[unit] = True
    return keep_unit[pair_unit]


def guard_text_leaks(data: PreferenceData, pair_split: Tensor) -> int:
    """Leave UNUSED (in place) every training pair sharing an embedding row with a validation
    or test pair, and every validation pair sharing one with a test pair; return how many."""
    before = int((pair_split != UNUSED).sum())
    for held_out, exposed in ((TEST, (TRAIN, VAL)), (VAL, (TRAIN,))):
        rows = torch.cat(
            [data.chosen[pair_split == held_out], data.rejected[pair_split == held_out]]
        )
        touches = torch.isin(data.chosen, rows) | torch.isin(data.rejected, rows)
        for side in exposed:
            pair_split[touches & (pair_split == side)] = UNUSED
    return before - int((pair_split != UNUSED).sum())


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
    validation_user_fraction: float = 0.0,
) -> SplitSummary:
    """Units to sides for everybody, then eligible users into seen / unseen, then per-user caps.

    With ``use_given_split`` the source's own train / test labels decide the test units (the
    paper's TL;DR protocol); otherwise ``test_fraction`` of all units is held out. A user is kept
    when it has at least ``min_pairs_per_user`` pairs, ``min_units_per_user`` distinct units
    (PRISM: conversations), and pairs on both the training and the test side. A
    ``validation_user_fraction`` of the seen users become validation users instead.
    """
    if not 0.0 <= validation_user_fraction < 1.0:
        raise ValueError(f"data.validation_users must be in [0, 1), got {validation_user_fraction}")
    if use_given_split and data.given_split is None:
        raise ValueError("data.use_given_split=true, but the source gives no train/test labels")
    gen = torch.Generator().manual_seed(seed)
    num_units = int(data.unit.max()) + 1 if data.num_pairs else 0
    if use_given_split:
        unit_side = assign_given_units(data.unit, data.given_split, num_units, val_fraction, gen)
    else:
        unit_side = assign_units(num_units, val_fraction, test_fraction, gen)
    pair_split = unit_side[data.unit].clone()
    if use_given_split:  # a pair keeps its own label: a training copy of a test post is unused
        pair_split[(data.given_split != TEST) & (pair_split == TEST)] = UNUSED
        pair_split[data.given_split == UNUSED] = UNUSED
    leaks = guard_text_leaks(data, pair_split)

    def per_user(mask: Tensor) -> Tensor:
        return torch.bincount(data.user[mask], minlength=data.num_users)

    everything = torch.ones(data.num_pairs, dtype=torch.bool)
    user_units = torch.unique(torch.stack([data.user, data.unit]), dim=1)[0]
    rules = (
        (
            f"with fewer than min_pairs_per_user={min_pairs_per_user} pairs",
            per_user(everything) < min_pairs_per_user,
        ),
        (
            f"with fewer than min_units_per_user={min_units_per_user} units",
            torch.bincount(user_units, minlength=data.num_users) < min_units_per_user,
        ),
        ("with no pair in the test units", per_user(pair_split == TEST) == 0),
        ("with no pair in the training units", per_user(pair_split == TRAIN) == 0),
    )
    dropped_reasons: Counter = Counter()
    eligible = torch.ones(data.num_users, dtype=torch.bool)
    for reason, failed in rules:  # each dropped user is counted under its first reason
        newly = failed & eligible
        if newly.any():
            dropped_reasons[f"users {reason}"] = int(newly.sum())
        eligible &= ~failed
    kept, dropped = eligible.nonzero().flatten(), (~eligible).nonzero().flatten()
    seen_pos, unseen_pos = split_users(len(kept), unseen_fraction, gen)
    seen, unseen = kept[seen_pos], kept[unseen_pos]
    validation = torch.empty(0, dtype=torch.long)
    if validation_user_fraction > 0:
        seen_order = torch.randperm(len(seen), generator=gen)
        num_validation = round(validation_user_fraction * len(seen))
        validation = seen[seen_order[:num_validation]].sort().values
        seen = seen[seen_order[num_validation:]].sort().values
    pair_split[~eligible[data.user]] = UNUSED
    is_seen = torch.zeros(data.num_users, dtype=torch.bool)
    is_seen[seen] = True  # validation users get the unseen cap: they stand in for new users
    train_rows = (pair_split == TRAIN).nonzero().flatten()
    train_rows = train_rows[torch.argsort(data.user[train_rows], stable=True)]
    counts = torch.bincount(data.user[train_rows], minlength=data.num_users)
    chunks = torch.split(train_rows, counts.tolist())
    for user in kept.tolist():  # fixed order: the same seed gives the same split
        cap = max_train_pairs_seen if is_seen[user] else max_train_pairs_unseen
        rows = chunks[user]
        if cap is not None and len(rows) > cap:
            pair_split[rows[~cap_train_pairs(data.unit[rows], cap, gen)]] = UNUSED
    return SplitSummary(seen, unseen, dropped, pair_split, dropped_reasons, leaks, validation)
