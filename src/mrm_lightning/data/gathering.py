"""Batches from the embedding table: gathering pairs' embeddings, packed or padded.

A batch is a dict of padded tensors for B users (P = the most pairs any of them has):
    support_chosen, support_rejected  [B, S, D]   support_mask  [B, S]
    query_chosen,   query_rejected    [B, Q, D]   query_mask    [B, Q]
    query_oracle_margin [B, Q] (when the true rewards are known), user [B], is_seen [B]
Users keep their own numbers of pairs; masks, not truncation, make them fit one tensor.
Meta-batches for linear base functions carry each real pair's chosen-minus-rejected embedding
instead, packed: ``pair_difference [M_s + M_q, D]``, the support pairs then the query pairs,
each part the pairs where its mask is True in the mask's row-major order, and
``query_owner [M_q]``, each query pair's row in the batch
(:class:`mrm_lightning.data.episodes.MetaTrainBatches` with ``differences``; :func:`split_packed`
takes the two parts apart, :func:`unpack_pairs` spreads values back to ``[B, P, ...]``). The
step then reads less than half the bytes (no rejected rows and no padding), and computes the
base rewards of both parts with one product. (:func:`gather_pairs` with ``differences`` gives
one part alone, as ``{prefix}_difference``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

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
