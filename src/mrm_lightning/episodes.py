"""Episodic user tasks: support / query sampling, padding, and the datasets that yield batches.

A batch is a dict of padded tensors for B users (P = the most pairs any of them has):
    support_chosen, support_rejected  [B, S, D]   support_mask  [B, S]
    query_chosen,   query_rejected    [B, Q, D]   query_mask    [B, Q]
    query_oracle_margin [B, Q] (when the true rewards are known), user [B], is_seen [B]
Users keep their own numbers of pairs; masks, not truncation, make them fit one tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import IterableDataset

from .preferences import PreferenceData

Size = int | float


def resolve_size(size: Size, available: int) -> int:
    """A count stays a count; a fraction in (0, 1) becomes ``round(size * available)`` (>= 1)."""
    if isinstance(size, float) and not size.is_integer():
        if not 0.0 < size < 1.0:
            raise ValueError(f"a fractional size must be in (0, 1), got {size}")
        return max(1, round(size * available))
    return int(size)


def sample_support_query(
    units: Tensor, support_size: Size, query_size: Size | None, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Split one user's training pairs into support and query by whole units.

    Units are shuffled and go to support until it holds at least ``support_size`` pairs; the
    remaining units form the query set, capped at ``query_size`` pairs (None: all of them).
    Returns positions into ``units``.
    """
    available = len(units)
    num_support = resolve_size(support_size, available)
    if num_support >= available:
        raise ValueError(f"support_size={support_size} leaves no query pair out of {available}")
    _, pair_unit = torch.unique(units, return_inverse=True)
    unit_order = torch.randperm(int(pair_unit.max()) + 1, generator=gen)
    pairs_per_unit = torch.bincount(pair_unit)[unit_order]
    # a unit joins the support iff the support still had room when its turn came.
    pairs_before = torch.cumsum(pairs_per_unit, 0) - pairs_per_unit
    unit_in_support = torch.zeros(len(unit_order), dtype=torch.bool)
    unit_in_support[unit_order] = pairs_before < num_support
    in_support = unit_in_support[pair_unit]
    shuffled = torch.randperm(available, generator=gen)
    support, query = shuffled[in_support[shuffled]], shuffled[~in_support[shuffled]]
    if not len(query):
        raise ValueError(f"support_size={support_size}: one unit holds all {available} pairs")
    if query_size is not None:
        query = query[: resolve_size(query_size, len(query))]
    return support, query


def collate_pairs(
    data: PreferenceData, per_user_pairs: Sequence[Tensor], prefix: str
) -> dict[str, Tensor]:
    """Gather embeddings of each user's pairs into padded ``[B, P, D]`` tensors plus a mask."""
    index = pad_sequence(list(per_user_pairs), batch_first=True, padding_value=0)
    mask = pad_sequence(
        [torch.ones(len(p), dtype=torch.bool) for p in per_user_pairs],
        batch_first=True,
        padding_value=False,
    )
    batch = {
        f"{prefix}_chosen": data.embeddings[data.chosen[index]],
        f"{prefix}_rejected": data.embeddings[data.rejected[index]],
        f"{prefix}_mask": mask,
    }
    if data.oracle_margin is not None:
        batch[f"{prefix}_oracle_margin"] = data.oracle_margin[index]
    return batch


def _seeded(*parts: int) -> torch.Generator:
    seed = 0
    for part in parts:  # a fixed mixing of the parts, stable across processes and runs
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class MetaTrainBatches(IterableDataset):
    """Meta-batches of seen users, each with a freshly sampled support / query episode.

    Every epoch shuffles the seen users with ``(seed, epoch)``; process ``rank`` of ``world``
    takes its own disjoint slice of each global meta-batch, so under DDP the processes see
    different users and the global meta-batch holds ``users_per_batch * world`` users. A
    user's episode depends only on ``(seed, epoch, user)``.
    """

    def __init__(
        self,
        data: PreferenceData,
        train_pairs: dict[int, Tensor],
        users: Tensor,
        users_per_batch: int,
        support_size: Size,
        query_size: Size | None,
        seed: int,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.data, self.train_pairs, self.users = data, train_pairs, users
        self.users_per_batch, self.support_size, self.query_size = (
            users_per_batch,
            support_size,
            query_size,
        )
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size

    def __len__(self) -> int:
        return len(self.users) // (self.users_per_batch * self.world_size)

    def episode(self, user: int, epoch: int) -> tuple[Tensor, Tensor]:
        pairs = self.train_pairs[user]
        support, query = sample_support_query(
            self.data.unit[pairs],
            self.support_size,
            self.query_size,
            _seeded(self.seed, epoch, user),
        )
        return pairs[support], pairs[query]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        epoch = self.epoch()
        order = self.users[torch.randperm(len(self.users), generator=_seeded(self.seed, epoch))]
        width = self.users_per_batch * self.world_size
        for step in range(len(self)):
            start = step * width + self.rank * self.users_per_batch
            users = order[start : start + self.users_per_batch]
            support, query = zip(*(self.episode(int(u), epoch) for u in users))
            yield {
                **collate_pairs(self.data, support, "support"),
                **collate_pairs(self.data, query, "query"),
                "user": users,
            }


class EvalBatches(IterableDataset):
    """All users of an evaluation: support = a user's training pairs, query = its held-out pairs.

    Users are dealt to processes round-robin (each counted exactly once under DDP); users
    without a held-out pair in this split are skipped.
    """

    def __init__(
        self,
        data: PreferenceData,
        support_pairs: dict[int, Tensor],
        query_pairs: dict[int, Tensor],
        seen_users: Tensor,
        users_per_batch: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        users = sorted(
            u for u, pairs in query_pairs.items() if len(pairs) and len(support_pairs[u])
        )
        self.users = users[rank::world_size]
        self.data, self.support_pairs, self.query_pairs = data, support_pairs, query_pairs
        self.seen = set(seen_users.tolist())
        self.users_per_batch = users_per_batch

    def __len__(self) -> int:
        return -(-len(self.users) // self.users_per_batch)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for start in range(0, len(self.users), self.users_per_batch):
            users = self.users[start : start + self.users_per_batch]
            yield {
                **collate_pairs(self.data, [self.support_pairs[u] for u in users], "support"),
                **collate_pairs(self.data, [self.query_pairs[u] for u in users], "query"),
                "user": torch.tensor(users),
                "is_seen": torch.tensor([u in self.seen for u in users]),
            }
