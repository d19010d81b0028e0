"""Episodic user tasks: support / query sampling and the datasets that yield batches.

Each meta-training user's episode (support and query pairs, split by unit) depends only on
(seed, epoch, user); the batches' layouts, padded or packed, are described in
:mod:`mrm_lightning.data.gathering`, which builds them from the embedding table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from .batch import PairBatch
from .buffers import ReusableBuffers
from .gathering import collate_pairs, gather_episode, gather_pairs
from .preferences import PreferenceData
from .sampling import Size, hash_keys, resolve_sizes, split_by_units


def _seeded(*parts: int) -> torch.Generator:
    seed = 0
    for part in parts:  # a fixed mixing of the parts, stable across processes and runs
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def pad_by_rank(owner: Tensor, rank: Tensor, values: Tensor, users: int) -> tuple[Tensor, Tensor]:
    """``values[i]`` at ``[owner[i], rank[i]]`` of a ``[B, P]`` tensor (P = most ranks), and
    the mask of the places filled."""
    width = int(rank.max()) + 1 if len(rank) else 0
    index = torch.zeros(users, width, dtype=torch.long)
    mask = torch.zeros(users, width, dtype=torch.bool)
    index[owner, rank] = values
    mask[owner, rank] = True
    return index, mask


def batch_widths(owner: Tensor, rank: Tensor, per_batch: int, batches: int) -> list[int]:
    """Of each ``per_batch`` consecutive owners, the most ranks one has: the width
    :func:`pad_by_rank` gives that batch alone (0 for a batch with none)."""
    widths = torch.zeros(batches, dtype=torch.long)
    return widths.scatter_reduce_(0, owner // per_batch, rank + 1, "amax").tolist()


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

    ``differences``: each batch is a :class:`~mrm_lightning.data.batch.PairBatch` of the real
    pairs' chosen-minus-rejected embeddings, packed (:func:`gather_episode`), the layout MRM
    reads, instead of a padded dict of chosen and rejected embeddings: for linear base
    functions only.
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
        differences: bool = False,
    ) -> None:
        self.data, self.train_pairs, self.users = data, train_pairs, users
        self.resume, self.differences = resume, differences
        self.support_size_min = support_size_min
        self.users_per_batch, self.support_size, self.query_size = (
            users_per_batch,
            support_size,
            query_size,
        )
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        # every user's training pairs laid end to end, once: a meta-batch's episodes are then
        # drawn in a few tensor operations (:meth:`episodes`), with no loop over its users
        self.lengths = torch.tensor([len(train_pairs[int(u)]) for u in users], dtype=torch.long)
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths
        self.flat_pairs = torch.cat([train_pairs[int(u)] for u in users] + [users[:0]])
        self.position = torch.full((int(users.max()) + 1 if len(users) else 0,), -1)
        self.position[users] = torch.arange(len(users))
        self.buffers = ReusableBuffers()  # the memory of batches already released

    def __len__(self) -> int:
        return len(self.users) // (self.users_per_batch * self.world_size)

    def split(self, users: Tensor, epoch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The training pairs of ``[B]`` users, ``[M]`` each: the user's position in ``users``
        (non-decreasing), the pair's row, its side (0 support, 1 query, 2 left out) and its
        rank within the side. A user's part depends only on ``(seed, epoch, user)``: its
        random keys hash exactly these (and its pairs), whoever else is in ``users``."""
        position = self.position[users]  # [B]
        lengths = self.lengths[position]
        owner = torch.repeat_interleave(torch.arange(len(users)), lengths)  # [M]
        offset = torch.arange(len(owner)) - (torch.cumsum(lengths, 0) - lengths)[owner]
        pairs = self.flat_pairs[self.starts[position][owner] + offset]  # [M] pair rows
        unit, user_of = self.data.unit[pairs], users[owner]
        prefix = int(hash_keys(self.seed, epoch))  # scalars first: mixed in Python
        if self.support_size_min is None:
            num_support = resolve_sizes(self.support_size, lengths)
        else:  # uniform in [support_size_min, support_size]
            span = int(self.support_size) - self.support_size_min + 1
            num_support = self.support_size_min + hash_keys(prefix, 0, users) % span
        unit_key = hash_keys(prefix, 1, user_of, unit)
        pair_key = hash_keys(prefix, 2, user_of, pairs)
        side, rank = split_by_units(unit, owner, num_support, self.query_size, unit_key, pair_key)
        return owner, pairs, side, rank

    @staticmethod
    def padded(
        owner: Tensor, pairs: Tensor, side: Tensor, rank: Tensor, users: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`split`'s pairs of ``users`` users as support pairs ``[B, S]`` and mask, query
        pairs ``[B, Q]`` and mask (pair indices, 0 where padded)."""
        support, query = side == 0, side == 1
        return (
            *pad_by_rank(owner[support], rank[support], pairs[support], users),
            *pad_by_rank(owner[query], rank[query], pairs[query], users),
        )

    def episodes(self, users: Tensor, epoch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Episodes of ``[B]`` users: support pairs ``[B, S]`` and mask, query pairs ``[B, Q]``
        and mask (pair indices, 0 where padded). A user's episode depends only on
        ``(seed, epoch, user)``."""
        return self.padded(*self.split(users, epoch), len(users))

    def episodes_by_batch(
        self, users: Tensor, epoch: int, per_batch: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """:meth:`episodes` of each ``per_batch`` consecutive users of ``users``, all split and
        padded at once: an epoch's episodes take a few tensor operations, and each meta-batch
        is then a slice of them."""
        if not len(users):
            return
        owner, pairs, side, rank = self.split(users, epoch)
        count = -(-len(users) // per_batch)
        grids = []  # per side: every user's pairs padded to the epoch's widest, and each
        for part in (side == 0, side == 1):  # batch's own width (its widest user's)
            o, r = owner[part], rank[part]
            index, mask = pad_by_rank(o, r, pairs[part], len(users))  # [U, W]
            grids.append((index, mask, batch_widths(o, r, per_batch, count)))
        for batch in range(count):
            rows = slice(batch * per_batch, (batch + 1) * per_batch)
            yield tuple(  # support pairs and mask, query pairs and mask
                grid[rows, : widths[batch]].contiguous()
                for index, mask, widths in grids
                for grid in (index, mask)
            )

    def episode(self, user: int, epoch: int) -> tuple[Tensor, Tensor]:
        """One user's support and query pairs (as in every meta-batch it is part of)."""
        support, support_mask, query, query_mask = self.episodes(torch.tensor([user]), epoch)
        return support[support_mask], query[query_mask]

    def __iter__(self) -> Iterator[dict[str, Tensor] | PairBatch]:
        epoch = self.epoch()
        order = self.users[torch.randperm(len(self.users), generator=_seeded(self.seed, epoch))]
        width = self.users_per_batch * self.world_size
        first = 0
        if self.resume is not None:  # once: only the interrupted epoch is partly done
            resume_epoch, done = self.resume
            self.resume = None
            first = min(done, len(self)) if resume_epoch == epoch else 0
        # this process's users of every remaining meta-batch, in order: [steps * B]
        starts = torch.arange(first, len(self)) * width + self.rank * self.users_per_batch
        mine = order[(starts[:, None] + torch.arange(self.users_per_batch)).reshape(-1)]
        gather = functools.partial(gather_pairs, self.data, buffers=self.buffers)
        episodes = self.episodes_by_batch(mine, epoch, self.users_per_batch)
        for users, episode in zip(mine.split(self.users_per_batch), episodes, strict=True):
            if self.differences:
                yield gather_episode(self.data, episode, users, self.buffers)
                continue
            support, support_mask, query, query_mask = episode
            yield {
                **gather(support, support_mask, "support"),
                **gather(query, query_mask, "query"),
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
        self.buffers = ReusableBuffers()  # the memory of batches already released

    def __len__(self) -> int:
        return max(1, -(-len(self.users) // self.users_per_batch))

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for start in range(0, max(len(self.users), 1), self.users_per_batch):
            users = self.users[start : start + self.users_per_batch]
            yield {
                **collate_pairs(
                    self.data, [self.support_pairs[u] for u in users], "support", self.buffers
                ),
                **collate_pairs(
                    self.data, [self.query_pairs[u] for u in users], "query", self.buffers
                ),
                "user": torch.tensor(users, dtype=torch.long),
                "is_seen": torch.tensor([u in self.seen for u in users], dtype=torch.bool),
            }
