"""The pairs ``mrm diagnose`` reads: the training split only, held out within it by unit.

The data module's training split is taken without its per-user caps (the caps are the few-shot
protocol of a run; a diagnosis wants every training judgement). Training units are then cut,
seeded, into a *fit* part and a *held-out* part, the same cut for every user: a user's own model
and the agreement weights see only the fit part, and every predictor is scored on the held-out
part. No pair of a validation or test unit is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.gathering import gather_differences
from ..data.splits import TRAIN, split_pairs
from ..method.significance import shuffle_users, shuffle_users_within_units

#: how a copy of the data can have its user ids shuffled before diagnosing (a null check)
SHUFFLES = ("none", "pairs", "units")


@dataclass
class TrainingPairs:
    """The training split's pairs, users and items renumbered from 0.

    Attributes:
        user: ``[P]`` who judged the pair, in ``[0, U)``.
        first: ``[P]`` the preferred item, in ``[0, T)`` (items: distinct texts).
        second: ``[P]`` the other item.
        unit: ``[P]`` the data's split unit (a post, a group of rated texts, a pair).
        held_out: ``[P]`` bool, the pair's unit is in the held-out part.
        differences: ``[P, D]`` embedding of the preferred minus the other text.
        user_names: the users' ids, indexed by ``user``.
        rows: ``[P]`` the pairs' rows in the data module's data.
        oracle_margin: ``[P]`` true reward margin where the source knows it, else None.
    """

    rows: Tensor
    user: Tensor
    first: Tensor
    second: Tensor
    unit: Tensor
    held_out: Tensor
    differences: Tensor
    user_names: list[str]
    num_items: int
    oracle_margin: Tensor | None = None

    @property
    def num_users(self) -> int:
        return len(self.user_names)

    @property
    def num_pairs(self) -> int:
        return len(self.user)

    def relabelled(self, user: Tensor) -> TrainingPairs:
        """The same pairs judged by other users (a permutation of the user labels)."""
        return TrainingPairs(
            self.rows, user, self.first, self.second, self.unit, self.held_out, self.differences,
            self.user_names, self.num_items, self.oracle_margin,
        )  # fmt: skip


def training_pairs(datamodule, holdout: float = 0.5, seed: int = 0) -> TrainingPairs:
    """The training split of a set-up data module, uncapped, with ``holdout`` of its units
    (seeded) held out for everybody."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"--holdout must be in (0, 1), got {holdout}")
    data = datamodule.data
    settings = {
        **datamodule.split_settings,
        "max_train_pairs_seen": None,
        "max_train_pairs_unseen": None,
    }
    split = split_pairs(data, **settings)  # same seed: the same units, users and sides
    rows = (split.pair_split == TRAIN).nonzero().flatten()
    kept, user = torch.unique(data.user[rows], return_inverse=True)
    items, item = torch.unique(
        torch.cat([data.chosen[rows], data.rejected[rows]]), return_inverse=True
    )
    units, unit = torch.unique(data.unit[rows], return_inverse=True)
    gen = torch.Generator().manual_seed(seed)
    held_units = torch.randperm(len(units), generator=gen)[: max(1, round(holdout * len(units)))]
    held_out = torch.isin(unit, held_units)
    oracle = data.oracle_margin
    return TrainingPairs(
        rows=rows,
        user=user,
        first=item[: len(rows)],
        second=item[len(rows) :],
        unit=unit,
        held_out=held_out,
        differences=gather_differences(data.embeddings, data.chosen[rows], data.rejected[rows]),
        user_names=[data.user_ids[u] for u in kept.tolist()],
        num_items=len(items),
        oracle_margin=None if oracle is None else oracle[rows],
    )


def items_are_shared(pairs: TrainingPairs) -> float:
    """Share of pairs whose unit was judged by more than one user."""
    blocks = torch.unique(torch.stack([pairs.unit, pairs.user]), dim=1)
    users_per_unit = torch.bincount(blocks[0], minlength=int(pairs.unit.max()) + 1)
    return float((users_per_unit[pairs.unit] > 1).double().mean()) if pairs.num_pairs else 0.0


def shuffled(pairs: TrainingPairs, how: str, seed: int) -> TrainingPairs:
    """A copy with user ids shuffled (``pairs``: across all pairs; ``units``: within units, where
    several users judged the same items), for the check that the test then finds nothing."""
    if how not in SHUFFLES:
        raise ValueError(f"--shuffle-users must be one of {', '.join(SHUFFLES)}, got {how!r}")
    if how == "none":
        return pairs
    gen = torch.Generator().manual_seed(seed + 7919)  # not the permutations' own stream
    if how == "pairs":
        return pairs.relabelled(shuffle_users(pairs.user, gen))
    return pairs.relabelled(shuffle_users_within_units(pairs.user, pairs.unit, gen))


def describe(pairs: TrainingPairs) -> dict:
    """Users, pairs per user (quantiles), and how many items several users judged."""
    per_user = torch.bincount(pairs.user, minlength=pairs.num_users).double()
    levels = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
    quantiles = per_user.quantile(torch.tensor(levels, dtype=torch.float64)).tolist()
    judged = torch.unique(
        torch.stack([torch.cat([pairs.first, pairs.second]), pairs.user.repeat(2)]), dim=1
    )
    raters = torch.bincount(judged[0], minlength=pairs.num_items)
    both_shared = (raters[pairs.first] > 1) & (raters[pairs.second] > 1)
    return {
        "users": pairs.num_users,
        "pairs": pairs.num_pairs,
        "held_out_pairs": int(pairs.held_out.sum()),
        "units": int(pairs.unit.max()) + 1 if pairs.num_pairs else 0,
        "pairs_per_user": {f"q{int(q * 100)}": v for q, v in zip(levels, quantiles)},
        "items": pairs.num_items,
        "items_judged_by_several_users": int((raters > 1).sum()),
        "raters_per_item": float(raters.double().mean()) if pairs.num_items else 0.0,
        "pairs_with_both_items_judged_by_others": float(both_shared.double().mean()),
        "pairs_in_units_judged_by_several_users": items_are_shared(pairs),
    }
