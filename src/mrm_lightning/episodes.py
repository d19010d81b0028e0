"""Episodic user tasks: support / query sampling, padding, and the datasets that yield batches.

A batch is a dict of padded tensors for B users (P = the most pairs any of them has):
    support_chosen, support_rejected  [B, S, D]   support_mask  [B, S]
    query_chosen,   query_rejected    [B, Q, D]   query_mask    [B, Q]
    query_oracle_margin [B, Q] (when the true rewards are known), user [B], is_seen [B]
Users keep their own numbers of pairs; masks, not truncation, make them fit one tensor.
Meta-batches for linear base functions carry each real pair's chosen-minus-rejected embedding
instead, packed: ``pair_difference [M_s + M_q, D]``, the support pairs then the query pairs,
each part the pairs where its mask is True in the mask's row-major order, and
``query_owner [M_q]``, each query pair's row in the batch (:class:`MetaTrainBatches` with
``differences``; :func:`split_packed` takes the two parts apart, :func:`unpack_pairs` spreads
values back to ``[B, P, ...]``). The step then reads less than half the bytes (no rejected
rows and no padding), and computes the base rewards of both parts with one product.
(:func:`gather_pairs` with ``differences`` gives one part alone, as ``{prefix}_difference``.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import IterableDataset

from .buffers import ReusableBuffers
from .preferences import CompactEmbeddings, PreferenceData
from .sampling import Size, hash_keys, resolve_sizes, split_by_units


def gather_rows(embeddings, rows: Tensor, buffers: ReusableBuffers | None = None) -> Tensor:
    """``[N]`` table rows -> ``[N, D]`` float32, in one indexing operation (a compact table's
    rows are cast after gathering), into reused memory when ``buffers`` are given."""
    table = embeddings.table if isinstance(embeddings, CompactEmbeddings) else embeddings
    if not isinstance(table, Tensor):
        return embeddings[rows]  # a memory-mapped table
    if buffers is None:
        return torch.index_select(table, 0, rows).float()
    shape = (len(rows), table.shape[1])
    out = buffers.take(shape, torch.float32)  # [N, D]
    if table.dtype == torch.float32:
        return torch.index_select(table, 0, rows, out=out)
    return out.copy_(torch.index_select(table, 0, rows, out=buffers.take(shape, table.dtype)))


DIFFERENCE_BLOCK = 128  # rows of a compact table cast and subtracted at a time (~2 MB)


def gather_differences(
    embeddings, chosen: Tensor, rejected: Tensor, buffers: ReusableBuffers | None = None
) -> Tensor:
    """``[N]`` chosen and ``[N]`` rejected table rows -> ``[N, D]`` float32 chosen minus
    rejected, each row read once."""
    table = embeddings.table if isinstance(embeddings, CompactEmbeddings) else embeddings
    if not isinstance(table, Tensor):  # a memory-mapped table
        return gather_rows(embeddings, chosen) - gather_rows(embeddings, rejected)
    if table.dtype == torch.float32:
        # one bag per pair, chosen weighted +1 and rejected -1: the difference is written once,
        # with no [N, D] of rejected rows in between. Exact: c * 1 + r * -1 rounds once, as
        # c - r does.
        rows = torch.stack([chosen, rejected], 1)  # [N, 2]
        signs = torch.tensor([1.0, -1.0]).expand(len(rows), 2)
        return F.embedding_bag(rows, table, mode="sum", per_sample_weights=signs)

    # a compact table: its rows cast to float32, then subtracted, a block of rows at a time, so
    # that the cast rejected rows stay in cache (float32 minus a compact row would cast it on
    # the fly, much slower); the same numbers as float32(chosen) - float32(rejected)
    def take(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        return torch.empty(shape, dtype=dtype) if buffers is None else buffers.take(shape, dtype)

    size, dim = len(chosen), table.shape[1]
    rows = max(1, min(size, DIFFERENCE_BLOCK))
    out = take((size, dim), torch.float32)  # [N, D]
    stored, cast = take((rows, dim), table.dtype), take((rows, dim), torch.float32)
    for start in range(0, size, rows):
        block = out[start : start + rows]
        n = len(block)
        block.copy_(torch.index_select(table, 0, chosen[start : start + n], out=stored[:n]))
        rejected_rows = torch.index_select(table, 0, rejected[start : start + n], out=stored[:n])
        block.sub_(cast[:n].copy_(rejected_rows))
    return out


def split_packed(values: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``[M_s + M_q, ...]`` values of a batch's packed pairs (``pair_difference``'s rows, see
    the module doc) -> its support part ``[M_s, ...]`` and its query part ``[M_q, ...]``. The
    sizes are read from shapes (``query_owner``), never from the masks' values: no host
    synchronisation on a GPU."""
    queries = len(batch["query_owner"])
    return values.split([len(values) - queries, queries])


def unpack_pairs(values: Tensor, mask: Tensor) -> Tensor:
    """``[M, ...]`` values of the real pairs of a ``[B, P]`` mask, in its row-major order ->
    ``[B, P, ...]`` with zeros at the padding (differentiable)."""
    if len(values) == mask.numel():  # no padding (e.g. fixed-size supports): a reshape
        return values.reshape(*mask.shape, *values.shape[1:])
    out = values.new_zeros(*mask.shape, *values.shape[1:])
    return out.masked_scatter(mask.view(*mask.shape, *[1] * (values.dim() - 1)), values)


def gather_pairs(
    data: PreferenceData,
    index: Tensor,
    mask: Tensor,
    prefix: str,
    buffers: ReusableBuffers | None = None,
    differences: bool = False,
) -> dict:
    """Embeddings of ``[B, P]`` padded pair indices as ``[B, P, D]`` tensors, plus the mask:
    ``{prefix}_chosen`` and ``{prefix}_rejected``, or with ``differences`` the real pairs'
    chosen-minus-rejected embeddings ``{prefix}_difference`` ``[M, D]`` (see the module doc)."""
    flat, shape = index.reshape(-1), (*index.shape, data.embedding_dim)
    if differences:  # the real pairs only, packed: no row is read or computed for padding
        real = flat[mask.reshape(-1)]  # [M]
        batch = {
            f"{prefix}_difference": gather_differences(
                data.embeddings, data.chosen[real], data.rejected[real], buffers
            )
        }
    else:
        batch = {
            f"{prefix}_{side}": gather_rows(data.embeddings, rows[flat], buffers).view(shape)
            for side, rows in (("chosen", data.chosen), ("rejected", data.rejected))
        }
    batch[f"{prefix}_mask"] = mask
    if data.oracle_margin is not None:
        batch[f"{prefix}_oracle_margin"] = data.oracle_margin[index]
    return batch


def gather_episode_differences(
    data: PreferenceData,
    episode: tuple[Tensor, Tensor, Tensor, Tensor],
    buffers: ReusableBuffers | None = None,
) -> dict[str, Tensor]:
    """An episode's support and query pairs (``[B, S]`` pairs and mask, ``[B, Q]`` pairs and
    mask) as one packed meta-batch (see the module doc): one gather writes both parts'
    differences, ``pair_difference`` (one pass over the rows instead of two, each with its own
    set-up), which the step reads with one product; ``query_owner`` gives each query pair's
    row, so that the query loss is taken on the packed pairs. One tensor, not two views of
    it: a batch moved to a GPU tensor by tensor would copy each view on its own."""
    support, support_mask, query, query_mask = episode
    owner, place = query_mask.nonzero(as_tuple=True)  # [M_q] each, row-major order
    real = torch.cat([support[support_mask], query[owner, place]])  # [M_s + M_q] pair rows
    batch = {
        "pair_difference": gather_differences(
            data.embeddings, data.chosen[real], data.rejected[real], buffers
        ),
        "support_mask": support_mask,
        "query_mask": query_mask,
        "query_owner": owner,
    }
    if data.oracle_margin is not None:
        batch["support_oracle_margin"] = data.oracle_margin[support]
        batch["query_oracle_margin"] = data.oracle_margin[query]
    return batch


def collate_pairs(
    data: PreferenceData,
    per_user_pairs: Sequence[Tensor],
    prefix: str,
    buffers: ReusableBuffers | None = None,
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
    return gather_pairs(data, index, mask, prefix, buffers)


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

    ``differences``: batches carry ``pair_difference`` (chosen minus rejected, support then
    query pairs, packed) and ``query_owner`` instead of the chosen and rejected embeddings
    (:func:`gather_episode_differences`): for linear base functions only.
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

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
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
                yield {
                    **gather_episode_differences(self.data, episode, self.buffers),
                    "user": users,
                }
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
