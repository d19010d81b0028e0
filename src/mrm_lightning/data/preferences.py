"""Preference data as tensors: embedded responses and the pairs that reference them.

Every source (the synthetic population, real datasets) produces a :class:`PreferenceData`;
splits, episodes and baselines only ever see this one structure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

#: how a data module stores the embedding table (``data.embedding_dtype``)
EmbeddingDtype = Literal["float32", "float16", "bfloat16"]


@dataclass
class PreferenceData:
    """Pairs ``(user, chosen, rejected)`` over a table of response embeddings.

    Attributes:
        embeddings: ``[T, D]`` float, one row per distinct (prompt, response).
        user: ``[P]`` long, index into ``user_ids`` of who judged the pair.
        chosen: ``[P]`` long, row of ``embeddings`` of the preferred response.
        rejected: ``[P]`` long, row of the other response.
        unit: ``[P]`` long, the unit that splits keep whole (a post, a conversation, an item
            pair): pairs sharing a unit never land on both sides of a split, so no text leaks
            from support into query or from train into test.
        user_ids: the users' names, indexed by ``user``.
        oracle_margin: ``[P]`` true reward(chosen) - reward(rejected) where the true rewards
            are known (synthetic data), else None.
        given_split: ``[P]`` the source's own TRAIN / TEST label of each pair (-1: none), for
            protocols that keep a release's splits (Reddit TL;DR); None when the source has none.

    ``embeddings`` may also be a memory-mapped table (``cache.ArrowEmbeddings``) or a compact
    one (:class:`CompactEmbeddings`): anything with ``shape``, ``len`` and row gathering by an
    integer tensor, which returns float32 rows.
    """

    embeddings: Tensor
    user: Tensor
    chosen: Tensor
    rejected: Tensor
    unit: Tensor
    user_ids: list[str]
    oracle_margin: Tensor | None = None
    given_split: Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return int(self.user.numel())

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def validate(self, origin: str = "preference data") -> PreferenceData:
        """Check shapes, index ranges and finiteness; raise ``ValueError`` naming the field."""
        if self.embeddings.ndim != 2:
            raise ValueError(
                f"{origin}: embeddings must be [T, D], got {tuple(self.embeddings.shape)}"
            )
        bad_rows = nonfinite_rows(self.embeddings)
        if bad_rows.numel():
            raise ValueError(
                f"{origin}: embeddings has NaN or infinite values in {bad_rows.numel()} rows "
                f"(first: row {int(bad_rows[0])})"
            )
        num_pairs = self.num_pairs
        optional = ("oracle_margin", "given_split")
        for name in ("chosen", "rejected", "unit") + tuple(
            n for n in optional if getattr(self, n) is not None
        ):
            if getattr(self, name).shape != (num_pairs,):
                raise ValueError(
                    f"{origin}: field {name!r} must have shape [{num_pairs}] like 'user'"
                )
        for name, upper in (
            ("user", self.num_users),
            ("chosen", len(self.embeddings)),
            ("rejected", len(self.embeddings)),
        ):
            values = getattr(self, name)
            if num_pairs and (values.min() < 0 or values.max() >= upper):
                raise ValueError(f"{origin}: field {name!r} has indices outside [0, {upper})")
        same = (self.chosen == self.rejected).nonzero().flatten()
        if same.numel():
            raise ValueError(f"{origin}: pair {int(same[0])} has the same chosen and rejected row")
        return self

    def subset(self, pair_index: Tensor) -> PreferenceData:
        """The same table restricted to some pairs (embeddings are shared, not copied)."""

        def pick(values: Tensor | None) -> Tensor | None:
            return None if values is None else values[pair_index]

        return PreferenceData(
            self.embeddings,
            self.user[pair_index],
            self.chosen[pair_index],
            self.rejected[pair_index],
            self.unit[pair_index],
            self.user_ids,
            pick(self.oracle_margin),
            pick(self.given_split),
        )


def nonfinite_rows(embeddings, block_values: int = 2**24) -> Tensor:
    """Rows holding NaN or inf, read block by block (``block_values`` numbers at a time: a
    memory-mapped table never fills RAM, a large one is never copied whole)."""
    bad, block = [], max(1, block_values // max(1, embeddings.shape[1]))
    for start in range(0, len(embeddings), block):
        rows = torch.arange(start, min(start + block, len(embeddings)))
        if isinstance(embeddings, Tensor):
            values = embeddings[start : start + len(rows)]  # a view, no copy
        else:
            values = embeddings[rows]
        bad.append(rows[(~torch.isfinite(values)).any(-1)])
    return torch.cat(bad) if bad else torch.empty(0, dtype=torch.long)


class CompactEmbeddings:
    """A ``[T, D]`` table kept in float16 or bfloat16 (half of float32's memory), read as float32.

    Gathering rows (``table[index]``) casts only the rows gathered, so every computation on
    them stays in float32; only the stored values are rounded (float16: 11 significant bits,
    bfloat16: 8, with float32's range).
    """

    def __init__(self, table: Tensor) -> None:
        if table.ndim != 2 or table.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"need a [T, D] float16 or bfloat16 table, got {table.dtype}")
        self.table = table
        self.shape, self.ndim, self.dtype = table.shape, 2, torch.float32

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Tensor) -> Tensor:
        index = torch.as_tensor(index)
        rows = torch.index_select(self.table, 0, index.reshape(-1)).float()  # [N, D]
        return rows.view(*index.shape, self.shape[1])

    @property
    def nbytes(self) -> int:
        return self.table.numel() * self.table.element_size()


def table_bytes(embeddings) -> int:
    """Memory held by an embedding table (0 for a memory-mapped one, which stays on disk)."""
    if isinstance(embeddings, Tensor):
        return embeddings.numel() * embeddings.element_size()
    return getattr(embeddings, "nbytes", 0)


def store_as(
    data: PreferenceData, dtype: EmbeddingDtype, block_values: int = 2**24
) -> PreferenceData:
    """``data`` with its table stored in ``dtype``, converted ``block_values`` numbers at a
    time (float32: unchanged). A float32 table is freed once nothing else refers to it."""
    if dtype == "float32" or isinstance(data.embeddings, CompactEmbeddings):
        return data
    source = data.embeddings
    table = torch.empty(tuple(source.shape), dtype=getattr(torch, dtype))  # [T, D]
    block = max(1, block_values // max(1, source.shape[1]))
    for start in range(0, len(source), block):
        rows = torch.arange(start, min(start + block, len(source)))
        table[start : start + len(rows)] = source[rows]
    return replace(data, embeddings=CompactEmbeddings(table))


class PreferenceSource:
    """Anything that yields :class:`PreferenceData` (the data module's ``source`` setting)."""

    #: Size of the embeddings this source produces, known before loading.
    embedding_dim: int

    def load(self) -> PreferenceData:
        raise NotImplementedError

    def load_as(self, dtype: EmbeddingDtype) -> PreferenceData:
        """:meth:`load`, with the table stored in ``dtype`` (the data module's
        ``embedding_dtype``). A source that can write its table compactly from the start
        overrides this, so that a float32 copy never exists (the synthetic population does)."""
        return store_as(self.load(), dtype)
