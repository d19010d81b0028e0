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

    Units are shuffled; each joins the support while the support holds fewer than
    ``support_size`` pairs, except the last unit of the order, which always goes to the query.
    So any user with two or more units gets an episode, with a smaller support than asked when
    its units are large; the query is capped at ``query_size`` pairs (None: all of them).
    Returns positions into ``units``. Raises ValueError when all pairs form one unit.
    """
    available = len(units)
    num_support = resolve_size(support_size, available)
    _, pair_unit = torch.unique(units, return_inverse=True)
    num_units = int(pair_unit.max()) + 1 if available else 0
    if num_units < 2:
        raise ValueError(
            f"an episode needs pairs from at least 2 units (posts, conversations...); "
            f"these {available} pairs form {num_units}"
        )
    unit_order = torch.randperm(num_units, generator=gen)
    pairs_per_unit = torch.bincount(pair_unit)[unit_order]
    # a unit joins the support iff the support still had room when its turn came.
    pairs_before = torch.cumsum(pairs_per_unit, 0) - pairs_per_unit
    joins = pairs_before < num_support
    joins[-1] = False  # the last unit is always query: an episode never runs out of query pairs
    unit_in_support = torch.zeros(num_units, dtype=torch.bool)
    unit_in_support[unit_order] = joins
    in_support = unit_in_support[pair_unit]
    shuffled = torch.randperm(available, generator=gen)
    support, query = shuffled[in_support[shuffled]], shuffled[~in_support[shuffled]]
    if query_size is not None:
        query = query[: resolve_size(query_size, len(query))]
    return support, query


def can_make_episode(units: Tensor) -> bool:
    """Whether :func:`sample_support_query` can split these pairs (two or more units)."""
    return len(torch.unique(units)) >= 2


def collate_pairs(
    data: PreferenceData, per_user_pairs: Sequence[Tensor], prefix: str
) -> dict[str, Tensor]:
    """Gather embeddings of each user's pairs into padded ``[B, P, D]`` tensors plus a mask."""
    if len(per_user_pairs):
        index = pad_sequence(list(per_user_pairs), batch_first=True, padding_value=0)
        mask = pad_sequence(
            [torch.ones(len(p), dtype=torch.bool) for p in per_user_pairs],
            batch_first=True,
            padding_value=False,
        )
    else:  # a batch of no users (a process with nothing to evaluate under DDP)
        index, mask = torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0, dtype=torch.bool)
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
    user's episode depends only on ``(seed, epoch, user)``. With ``support_size_min``, each
    episode's support size is drawn uniformly from ``[support_size_min, support_size]``, so
    meta-training sees the range of sizes users have when they are adapted.

    ``resume = (epoch, batches)`` continues an interrupted epoch: the first pass over that
    epoch starts after its first ``batches`` meta-batches, which the run that saved the
    checkpoint had already trained on (the data module reads it from the checkpoint).
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
        support_size_min: int | None = None,
        resume: tuple[int, int] | None = None,
    ) -> None:
        self.data, self.train_pairs, self.users = data, train_pairs, users
        self.resume = resume
        self.support_size_min = support_size_min
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
        gen = _seeded(self.seed, epoch, user)
        size = self.support_size
        if self.support_size_min is not None:
            size = int(torch.randint(self.support_size_min, int(size) + 1, (), generator=gen))
        support, query = sample_support_query(self.data.unit[pairs], size, self.query_size, gen)
        return pairs[support], pairs[query]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        epoch = self.epoch()
        order = self.users[torch.randperm(len(self.users), generator=_seeded(self.seed, epoch))]
        width = self.users_per_batch * self.world_size
        first = 0
        if self.resume is not None:  # once: only the interrupted epoch is partly done
            resume_epoch, done = self.resume
            self.resume = None
            first = min(done, len(self)) if resume_epoch == epoch else 0
        for step in range(first, len(self)):
            start = step * width + self.rank * self.users_per_batch
            users = order[start : start + self.users_per_batch]
            support, query = zip(*(self.episode(int(u), epoch) for u in users))
            yield {
                **collate_pairs(self.data, support, "support"),
                **collate_pairs(self.data, query, "query"),
                "user": users,
            }


class EvalBatches(IterableDataset):
    """Users of an evaluation: support = a user's training pairs, query = its held-out pairs.

    ``users`` is decided by the data module, once, so that every method and baseline is scored
    on the same users and pairs; a user may have no support pairs (then it is scored with the
    prior). Users are dealt to processes round-robin (each counted exactly once under DDP); a
    process with no user still yields one empty batch, so that every process logs the same
    metrics and their end-of-epoch synchronisation never waits for a process that logged none.
    """

    def __init__(
        self,
        data: PreferenceData,
        support_pairs: dict[int, Tensor],
        query_pairs: dict[int, Tensor],
        users: Sequence[int],
        seen_users: Tensor,
        users_per_batch: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.users = list(users)[rank::world_size]
        self.data, self.support_pairs, self.query_pairs = data, support_pairs, query_pairs
        self.seen = set(seen_users.tolist())
        self.users_per_batch = users_per_batch

    def __len__(self) -> int:
        return max(1, -(-len(self.users) // self.users_per_batch))

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for start in range(0, max(len(self.users), 1), self.users_per_batch):
            users = self.users[start : start + self.users_per_batch]
            yield {
                **collate_pairs(self.data, [self.support_pairs[u] for u in users], "support"),
                **collate_pairs(self.data, [self.query_pairs[u] for u in users], "query"),
                "user": torch.tensor(users, dtype=torch.long),
                "is_seen": torch.tensor([u in self.seen for u in users], dtype=torch.bool),
            }
