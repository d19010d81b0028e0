"""The one batch layout MRM reads: B users' support and query pairs, the real pairs packed.

A :class:`PairBatch` holds one row per real pair, no padding: the support pairs first, each
user's in turn (the row-major order of ``support_mask``), then the query pairs in the same
order. Where the base reward functions are linear, a row is the pair's chosen-minus-rejected
embedding (``rejected`` is None): phi(c) - phi(r) = phi(c - r) exactly, and the step reads
half the bytes. Other base functions get both sides, ``chosen`` and ``rejected``, row for row.
Either way :meth:`PairBatch.pair_rewards` gives reward(chosen) - reward(rejected) per pair, the
only thing MAML, the losses and the metrics need.

Meta-training batches for linear base functions are gathered straight into this layout
(:func:`mrm_lightning.data.gathering.gather_episode`); padded batches (evaluation, other base
functions, callers of the model outside a Trainer) are packed by :func:`pack_padded`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .buffers import ReusableBuffers


@dataclass
class PairBatch:
    """Support and query pairs of B users, packed (see the module doc)."""

    chosen: Tensor  # [M_s + M_q, D] chosen embeddings, or chosen minus rejected
    rejected: Tensor | None  # [M_s + M_q, D] rejected embeddings; None: `chosen` is the difference
    support_mask: Tensor  # [B, S] bool: user b's support pairs (in S places, some padding)
    query_mask: Tensor  # [B, Q] bool: the same for the query pairs
    query_owner: Tensor  # [M_q] each query pair's user (its row of query_mask)
    user: Tensor | None = None  # [B] user ids
    is_seen: Tensor | None = None  # [B] whether the user was meta-trained on (evaluation)
    query_oracle_margin: Tensor | None = None  # [M_q] true margins, where known (evaluation)

    @property
    def users(self) -> int:
        """B, the batch's users (rows of the masks)."""
        return len(self.support_mask)

    def split(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """``[M_s + M_q, ...]`` values, one per row -> the support part ``[M_s, ...]`` and the
        query part ``[M_q, ...]``. Sizes come from shapes (``query_owner``), never from the
        masks' values: no host synchronisation on a GPU."""
        queries = len(self.query_owner)
        return values.split([len(values) - queries, queries])

    def pair_rewards(self, reward: Callable[[Tensor], Tensor]) -> Tensor:
        """``reward(chosen) - reward(rejected)`` of every pair, ``[M_s + M_q, ...]``; where the
        batch carries differences, ``reward(difference)``, the same for a linear ``reward``."""
        if self.rejected is None:
            return reward(self.chosen)
        return reward(self.chosen) - reward(self.rejected)


def pack_padded(
    batch: Mapping[str, Tensor], differences: bool, buffers: ReusableBuffers | None = None
) -> PairBatch:
    """A padded batch (``{prefix}_chosen`` / ``_rejected`` ``[B, P, D]`` and ``_mask``
    ``[B, P]``, for prefix support and query; :mod:`.gathering`) as a :class:`PairBatch`, with
    ``differences`` carrying chosen minus rejected; into reused memory when ``buffers`` are
    given (CPU batches). The masks say which pairs are real (a batch may mask out gathered
    pairs, e.g. to cut supports); a batch without query pairs (adapting users only) gets none."""
    support_mask = batch["support_mask"]
    query_mask = batch.get("query_mask", support_mask[:, :0])
    parts = ("support", "query") if "query_mask" in batch else ("support",)
    places = [batch[f"{part}_mask"].flatten().nonzero().squeeze(1) for part in parts]  # [M_p]
    sizes = [len(index) for index in places]
    first = batch["support_chosen"]
    reuse = buffers is not None and first.device.type == "cpu"

    def side(name: str) -> Tensor:  # [M_s + M_q, D], by row index (boolean masks are slower)
        shape = (sum(sizes), first.shape[-1])
        out = buffers.take(shape, first.dtype) if reuse else first.new_empty(shape)
        for part, index, rows in zip(parts, places, out.split(sizes), strict=True):
            torch.index_select(batch[f"{part}_{name}"].flatten(0, 1), 0, index, out=rows)
        return out

    chosen = side("chosen")
    oracle = batch.get("query_oracle_margin")
    return PairBatch(
        chosen=chosen.sub_(side("rejected")) if differences else chosen,
        rejected=None if differences else side("rejected"),
        support_mask=support_mask,
        query_mask=query_mask,
        query_owner=query_mask.nonzero()[:, 0],  # row-major order
        user=batch.get("user"),
        is_seen=batch.get("is_seen"),
        query_oracle_margin=None if oracle is None else oracle[query_mask],
    )


def unpack_pairs(values: Tensor, mask: Tensor) -> Tensor:
    """``[M, ...]`` values of the real pairs of a ``[B, P]`` mask, in its row-major order ->
    ``[B, P, ...]`` with zeros at the padding (differentiable)."""
    if len(values) == mask.numel():  # no padding (e.g. fixed-size supports): a reshape
        return values.reshape(*mask.shape, *values.shape[1:])
    out = values.new_zeros(*mask.shape, *values.shape[1:])
    return out.masked_scatter(mask.view(*mask.shape, *[1] * (values.dim() - 1)), values)
