"""Episode sampling: support / query splits by whole units, for many users at once.

The pure functions behind :class:`mrm_lightning.data.episodes.MetaTrainBatches`. Random numbers are
hashed from integer parts (seed, epoch, user, unit, pair) rather than drawn from a generator
per user, so a meta-batch is sampled in a few tensor operations and a user's episode still
depends only on its own parts.
"""

from __future__ import annotations

import torch
from torch import Tensor

Size = int | float


def resolve_size(size: Size, available: int) -> int:
    """A count stays a count; a fraction in (0, 1) becomes ``round(size * available)`` (>= 1)."""
    if isinstance(size, float) and not size.is_integer():
        if not 0.0 < size < 1.0:
            raise ValueError(f"a fractional size must be in (0, 1), got {size}")
        return max(1, round(size * available))
    return int(size)


M31 = 2**31 - 1  # random keys are 31-bit: products below stay inside int64


def hash_keys(*parts: Tensor | int) -> Tensor:
    """Random-looking 31-bit keys from integer parts (broadcast), the same on every machine.

    Episodes draw from these instead of a generator per user, so a whole meta-batch is sampled
    in a few tensor operations while each user's episode still depends only on its own parts.
    Leading Python ints are mixed in Python (the same arithmetic), so put scalars first.
    """
    key: Tensor | int = 0
    for part in parts:
        if not (isinstance(key, int) and isinstance(part, int)):
            key, part = torch.as_tensor(key), torch.as_tensor(part, dtype=torch.long)
        key = ((key * 1_000_003) ^ (part & M31) ^ (part >> 31)) & M31
        for _ in range(2):  # a 32-bit integer mix (xor-shift, multiply), kept to 31 bits
            key = (((key >> 16) ^ key) * 0x45D9F3B) & M31
        key = (key >> 16) ^ key
    return torch.as_tensor(key)


def split_by_units(
    unit: Tensor,
    owner: Tensor,
    num_support: Tensor,
    query_size: Size | None,
    unit_key: Tensor,
    pair_key: Tensor,
) -> tuple[Tensor, Tensor]:
    """Support / query split of several users' pairs at once, by whole units.

    Per user, its units are ordered by their keys; each joins the support while the support
    holds fewer than that user's ``num_support`` pairs, except the last unit of the order,
    which always goes to the query. Pairs are then ordered by their keys within each side, and
    the query keeps its first ``resolve_size(query_size, n)`` of n pairs (None: all).

    Args:
        unit: ``[M]`` each pair's unit (ids only need to differ within a user).
        owner: ``[M]`` each pair's user, ``0 .. B-1``, non-decreasing.
        num_support: ``[B]`` support pairs wanted per user (every user needs 2+ units).
        query_size: the query cap (count or fraction), or None.
        unit_key, pair_key: ``[M]`` random keys (``unit_key`` equal for pairs of one unit).

    Returns:
        ``side`` ``[M]`` (0 support, 1 query, 2 left out) and ``rank`` ``[M]``, the pair's
        position within its user's side.
    """
    users = len(num_support)
    # units of each user, ordered by key: one entry per (user, unit)
    pair_unit_id, first = torch.unique(owner * (int(unit.max()) + 1) + unit, return_inverse=True)
    units = len(pair_unit_id)
    unit_owner = torch.zeros(units, dtype=torch.long).scatter_(0, first, owner)
    key_of_unit = torch.zeros(units, dtype=torch.long).scatter_(0, first, unit_key)
    # stable: equal keys keep their order, so a user's split never depends on other users
    order = torch.argsort((unit_owner << 31) | key_of_unit, stable=True)  # by user, then key
    size = torch.bincount(first, minlength=units)[order]  # [U] pairs per unit, in order
    owner_in_order = unit_owner[order]
    ends = torch.cumsum(size, 0)
    user_start = torch.zeros(users, dtype=torch.long)  # pairs of earlier users, in order
    user_start[1:] = torch.cumsum(torch.bincount(owner, minlength=users), 0)[:-1]
    before = ends - size - user_start[owner_in_order]  # the user's pairs before this unit
    joins = before < num_support[owner_in_order]
    is_last = torch.ones(units, dtype=torch.bool)
    is_last[:-1] = owner_in_order[1:] != owner_in_order[:-1]
    joins &= ~is_last  # an episode never runs out of query pairs
    unit_joins = torch.empty(units, dtype=torch.bool).scatter_(0, order, joins)
    side = (~unit_joins[first]).long()  # [M] 0 support, 1 query
    # pairs by (user, side, key): ranks within each user's side
    group = owner * 2 + side
    pair_order = torch.argsort((group << 31) | pair_key, stable=True)
    counts = torch.bincount(group, minlength=2 * users)  # [2B]
    group_start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(owner)
    rank[pair_order] = torch.arange(len(owner)) - group_start[group[pair_order]]
    if query_size is not None:
        available = counts[1::2]  # [B] query pairs per user
        keep = resolve_sizes(query_size, available)
        side = torch.where((side == 1) & (rank >= keep[owner]), 2, side)
    return side, rank


def resolve_sizes(size: Size, available: Tensor) -> Tensor:
    """:func:`resolve_size` of each of ``[B]`` counts (``round`` halves to even, as Python's)."""
    if isinstance(size, float) and not size.is_integer():
        if not 0.0 < size < 1.0:
            raise ValueError(f"a fractional size must be in (0, 1), got {size}")
        return torch.round(size * available.double()).long().clamp_min(1)
    return torch.full_like(available, int(size))


def sample_support_query(
    units: Tensor, support_size: Size, query_size: Size | None, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Split one user's training pairs into support and query by whole units.

    Units are shuffled; each joins the support while the support holds fewer than
    ``support_size`` pairs, except the last unit of the order, which always goes to the query.
    So any user with two or more units gets an episode, with a smaller support than asked when
    its units are large; the query is capped at ``query_size`` pairs (None: all of them).
    Returns positions into ``units``. Raises ValueError when all pairs form one unit.
    (One user of :func:`split_by_units`, with keys drawn from ``gen``.)
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
    unit_key = torch.randint(M31, (num_units,), generator=gen)[pair_unit]
    pair_key = torch.randint(M31, (available,), generator=gen)
    owner = torch.zeros(available, dtype=torch.long)
    side, rank = split_by_units(
        pair_unit, owner, torch.tensor([num_support]), query_size, unit_key, pair_key
    )
    return tuple(  # type: ignore[return-value]
        torch.empty(int((side == s).sum()), dtype=torch.long).scatter_(
            0, rank[side == s], (side == s).nonzero().flatten()
        )
        for s in (0, 1)
    )


def can_make_episode(units: Tensor) -> bool:
    """Whether :func:`sample_support_query` can split these pairs (two or more units)."""
    return len(torch.unique(units)) >= 2
