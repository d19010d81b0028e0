"""One model per group: a global Bradley-Terry reward for each group of users (a demographic
column of a users file), everybody's model for users without a group or groups too small.

What "personalization by who you are" gives, beside MRM's "by what you judged": a user is
scored by their group's model, fitted on that group's seen users' training pairs, its L2 chosen
on the validation pairs of that group's validation users (or everybody's, where the group has
none). A group with fewer than ``min_group_users`` seen users uses everybody's model.
"""

from __future__ import annotations

import csv

import torch
from torch import Tensor

from ..data.splits import TRAIN
from ..training.baselines import fit_global_reward
from .evaluation import PeerModel


def read_groups(path: str, user_column: str, group_by: str) -> dict[str, str]:
    """User id -> group from a CSV file; blank groups are no group."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for column in (user_column, group_by):
            if column not in (reader.fieldnames or []):
                raise ValueError(
                    f"{path}: no column {column!r}; the header has "
                    + ", ".join(repr(c) for c in reader.fieldnames or [])
                )
        return {row[user_column]: row[group_by].strip() for row in reader if row[group_by].strip()}


class PerGroupModel(PeerModel):
    """A global reward per group (module docstring).

    Args:
        embedding_dim: D of the input embeddings (linked from the data module).
        groups: a CSV file with a row per user, e.g. ``../shared/data/sbic/annotators.csv``.
        group_by: the column that names a user's group, e.g. ``politics``.
        user_column: the column of user ids (as the preference data names them).
        min_group_users: groups with fewer seen users than this use everybody's model.
        l2_grid: L2 strengths tried for each group's model, chosen on validation pairs.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        groups: str = "",
        group_by: str = "",
        user_column: str = "user_id",
        min_group_users: int = 3,
        l2_grid: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
    ) -> None:
        super().__init__(num_candidates=1, standardize_inputs=False)
        if not groups or not group_by:
            raise ValueError("PerGroupModel needs groups (a CSV file) and group_by (its column)")
        self.save_hyperparameters()
        # row g: group g's direction; the last row everybody's (users without a usable group)
        self.register_buffer("directions", torch.zeros(0, embedding_dim))
        self.register_buffer("user_row", torch.zeros(0, dtype=torch.long))
        #: group name of each row of ``directions`` but the last
        self.group_names: list[str] = []
        self.register_load_state_dict_pre_hook(resize_to_checkpoint)

    def build(self, datamodule) -> None:
        users = datamodule.data.num_users
        if len(self.user_row) != users:  # a checkpoint's values are loaded over these
            self.user_row = torch.zeros(users, dtype=torch.long)

    def fit_to_data(self, datamodule) -> None:
        hp = self.hparams
        group_of = read_groups(hp.groups, hp.user_column, hp.group_by)
        names = datamodule.data.user_ids
        seen = datamodule.split.seen_users.tolist()
        validation = datamodule.validation_pairs()
        everybody, _ = fit_global_reward(datamodule.pairs(TRAIN, seen), validation, hp.l2_grid)
        members: dict[str, list[int]] = {}
        for user in seen:
            if names[user] in group_of:
                members.setdefault(group_of[names[user]], []).append(user)
        usable = sorted(g for g, us in members.items() if len(us) >= hp.min_group_users)
        rows = []
        for group in usable:
            in_group = torch.tensor([group_of.get(n) == group for n in names])
            val = validation.subset(in_group[validation.user].nonzero().flatten())
            direction, _ = fit_global_reward(
                datamodule.pairs(TRAIN, members[group]),
                val if val.num_pairs else validation,
                hp.l2_grid,
            )
            rows.append(direction)
        self.directions = torch.stack([*rows, everybody])
        row_of = {group: index for index, group in enumerate(usable)}
        self.user_row = torch.tensor(
            [row_of.get(group_of.get(name, ""), len(usable)) for name in names]
        )
        self.group_names = usable

    def eval_margins(self, batch: dict[str, Tensor], candidate: int) -> Tensor:
        direction = self.directions[self.user_row[batch["user"]]]  # [B, D]
        difference = batch["query_chosen"] - batch["query_rejected"]  # [B, Q, D]
        return torch.einsum("bqd,bd->bq", difference, direction)


def resize_to_checkpoint(module, state_dict: dict, prefix: str, *_: object) -> None:
    """Load-state-dict pre-hook: the tables' sizes (groups, users) come from the data, so a
    module built before it takes the checkpoint's."""
    for name in ("directions", "user_row"):
        saved = state_dict.get(prefix + name)
        if saved is not None and saved.shape != getattr(module, name).shape:
            setattr(module, name, torch.zeros_like(saved))
