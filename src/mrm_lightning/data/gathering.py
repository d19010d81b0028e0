"""Batches from the embedding table: gathering pairs' embeddings, padded or packed.

A padded batch is a dict of tensors for B users (P = the most pairs any of them has):
    support_chosen, support_rejected  [B, S, D]   support_mask  [B, S]
    query_chosen,   query_rejected    [B, Q, D]   query_mask    [B, Q]
    query_oracle_margin [B, Q] (when the true rewards are known), user [B], is_seen [B]
Users keep their own numbers of pairs; masks, not truncation, make them fit one tensor. The
peers read these, and MRM packs them (:func:`mrm_lightning.data.batch.pack_padded`).
Meta-batches for linear base functions are gathered straight into MRM's packed layout
(:class:`mrm_lightning.data.batch.PairBatch`, :func:`gather_episode`): each real pair's
chosen-minus-rejected embedding, support pairs then query pairs, so the step reads less than
half the bytes (no rejected rows and no padding) and computes both parts' base rewards with
one product.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from .batch import PairBatch
from .buffers import ReusableBuffers
from .preferences import CompactEmbeddings, PreferenceData


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


def gather_pairs(
    data: PreferenceData,
    index: Tensor,
    mask: Tensor,
    prefix: str,
    buffers: ReusableBuffers | None = None,
) -> dict:
    """Embeddings of ``[B, P]`` padded pair indices as ``[B, P, D]`` tensors
    ``{prefix}_chosen`` and ``{prefix}_rejected``, plus the mask, and for query pairs their true
    margins where the data knows them (the oracle's accuracy; nothing reads support ones)."""
    flat, shape = index.reshape(-1), (*index.shape, data.embedding_dim)
    batch = {
        f"{prefix}_{side}": gather_rows(data.embeddings, rows[flat], buffers).view(shape)
        for side, rows in (("chosen", data.chosen), ("rejected", data.rejected))
    }
    batch[f"{prefix}_mask"] = mask
    if data.oracle_margin is not None and prefix == "query":
        batch["query_oracle_margin"] = data.oracle_margin[index]
    return batch


def gather_episode(
    data: PreferenceData,
    episode: tuple[Tensor, Tensor, Tensor, Tensor],
    users: Tensor,
    buffers: ReusableBuffers | None = None,
) -> PairBatch:
    """The episodes of ``[B]`` users (``[B, S]`` support pairs and mask, ``[B, Q]`` query pairs
    and mask) as one packed meta-batch of pair differences (see the module doc): one gather
    writes both parts (one pass over the rows instead of two, each with its own set-up). One
    tensor, not two views of it: a batch moved to a GPU tensor by tensor would copy each view
    on its own. Training reads no true margins, so none are gathered."""
    support, support_mask, query, query_mask = episode
    owner, place = query_mask.nonzero(as_tuple=True)  # [M_q] each, row-major order
    real = torch.cat([support[support_mask], query[owner, place]])  # [M_s + M_q] pair rows
    return PairBatch(
        chosen=gather_differences(data.embeddings, data.chosen[real], data.rejected[real], buffers),
        rejected=None,
        support_mask=support_mask,
        query_mask=query_mask,
        query_owner=owner,
        user=users,
    )


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
