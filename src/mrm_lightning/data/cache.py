"""Embedding cache: Arrow on disk through `datasets`, memory-mapped, written atomically.

An entry is a folder named by a key: the sha256 of what was encoded (every text, in order) and
of the encoder's identity (model, weights hash or revision, pooling, max length, template,
truncation rule, dtype). Any change makes a new key; the same inputs find the entry without
loading the encoder. An entry is written under a temporary name and renamed into place when
complete, so a killed run never leaves a folder that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

META = "mrm_cache.json"


def fingerprint(parts: dict) -> str:
    """A stable sha256 of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def texts_digest(items) -> str:
    """sha256 of every (history, prompt, response) in order: the content being encoded."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(item).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


class ArrowEmbeddings:
    """A ``[T, D]`` float32 table backed by memory-mapped Arrow chunks (no copy into RAM).

    Supports what preference data needs of a tensor: ``shape``, ``len`` and gathering rows
    with an integer tensor of any shape (``table[index]`` -> ``[*index.shape, D]``).
    """

    def __init__(self, chunks: list[np.ndarray]) -> None:
        self.chunks = chunks
        sizes = torch.tensor([len(c) for c in chunks])
        self.starts = torch.cumsum(sizes, 0) - sizes
        self.shape = torch.Size([int(sizes.sum()), chunks[0].shape[1] if chunks else 0])
        self.ndim, self.dtype = 2, torch.float32

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Tensor) -> Tensor:
        flat = torch.as_tensor(index).reshape(-1)
        chunk_of = torch.searchsorted(self.starts, flat, right=True) - 1
        out = torch.empty(len(flat), self.shape[1])
        for chunk in chunk_of.unique().tolist():
            rows = (chunk_of == chunk).nonzero().flatten()
            local = (flat[rows] - self.starts[chunk]).numpy()
            out[rows] = torch.from_numpy(self.chunks[chunk][local])
        return out.reshape(*torch.as_tensor(index).shape, self.shape[1])


class EmbeddingCache:
    """Folders of encoded texts under ``root``, one per key."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> ArrowEmbeddings | None:
        """The entry for ``key``, or None when there is none (a half-written one never counts)."""
        from datasets import load_from_disk

        folder = self.path(key)
        if not (folder / META).is_file():
            return None
        column = load_from_disk(str(folder)).data.table.column("embedding")
        dim = json.loads((folder / META).read_text())["dim"]
        return ArrowEmbeddings(
            [c.values.to_numpy(zero_copy_only=True).reshape(-1, dim) for c in column.chunks]
        )

    def save(self, key: str, embeddings: Tensor, meta: dict) -> ArrowEmbeddings:
        """Write an entry atomically and return it memory-mapped."""
        import datasets
        from datasets import Dataset, Features, List, Value

        if not torch.isfinite(embeddings).all():
            bad = (~torch.isfinite(embeddings)).any(-1).nonzero().flatten()
            raise ValueError(
                f"the encoder produced NaN or infinite values for {len(bad)} texts "
                f"(first: text {int(bad[0])}); nothing was cached"
            )
        dim = int(embeddings.shape[1])
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".tmp-{key}-{uuid.uuid4().hex}"
        features = Features({"embedding": List(Value("float32"), length=dim)})
        bars_were_off = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # a save takes milliseconds; its bar is only noise
        try:
            Dataset.from_dict(
                {"embedding": embeddings.float().numpy()}, features=features
            ).save_to_disk(str(staging), num_shards=1)
            (staging / META).write_text(
                json.dumps({**meta, "dim": dim, "rows": len(embeddings)}, indent=2, sort_keys=True)
            )
            target = self.path(key)
            if target.exists() and self.load(key) is None:  # a stale, incomplete folder
                stale = self.root / f".stale-{key}-{uuid.uuid4().hex}"
                os.rename(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(staging, target)  # atomic: the entry appears whole or not at all
            except OSError:  # another process wrote the same entry first: keep theirs
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:  # interrupted: leave no staging folder behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            if not bars_were_off:
                datasets.enable_progress_bars()
        loaded = self.load(key)
        if loaded is None:
            raise RuntimeError(f"could not write the cache entry {self.path(key)}")
        return loaded
