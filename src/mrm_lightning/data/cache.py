"""Embedding cache: one vector per text, kept once per encoder, memory-mapped, written atomically.

Layout: ``root/<encoder key>/<segment>/``. The encoder key is the sha256 of the encoder's
identity (model, weights hash or revision, pooling, max length, template, truncation rule,
dtype), so vectors of two encoders never mix. A segment is an Arrow folder (written through
``datasets``) plus a metadata file listing the sha256 of each of its texts, in row order.
Segments are immutable: a lookup reads their text digests (no shared index file that a killed
or concurrent run could corrupt), the texts not found are encoded and written as one new
segment, and the table returned gathers the requested rows from the segments' memory-mapped
chunks. So a run whose texts overlap an earlier one's encodes only the new ones.

A segment is written under a temporary name, its metadata last, and renamed into place when
complete: a killed run never leaves a folder that a later run would trust. Entries of the
earlier layout (one folder per whole list of texts, directly under ``root``) are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

META = "mrm_cache.json"


def fingerprint(parts: dict) -> str:
    """A stable sha256 of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def text_digests(items: Sequence) -> list[str]:
    """sha256 of each (history, prompt, response): a text's address in the cache. JSON keeps
    the parts' boundaries (("ab", "c") is not ("a", "bc")); tuples and lists hash alike."""
    return [hashlib.sha256(json.dumps(item).encode()).hexdigest() for item in items]


def segment_name(digests: Sequence[str]) -> str:
    """A segment's folder name: its content's address (two runs that write the same texts
    write the same name, and the second keeps the first's)."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def row_map(places: Sequence[tuple[int, int]], sizes: Sequence[int]) -> tuple[list[int], Tensor]:
    """The segments that hold the requested rows (in order of first use) and each requested
    row's position in those segments laid end to end.

    ``places[i] = (segment, row)`` for requested row i; ``sizes[s]``: rows of segment s.
    """
    used = list(dict.fromkeys(segment for segment, _ in places))
    offset, start = {}, 0
    for segment in used:
        offset[segment], start = start, start + sizes[segment]
    return used, torch.tensor([offset[s] + row for s, row in places], dtype=torch.long)


class ArrowEmbeddings:
    """A ``[T, D]`` float32 table backed by memory-mapped Arrow chunks (no copy into RAM).

    Supports what preference data needs of a tensor: ``shape``, ``len`` and gathering rows
    with an integer tensor of any shape (``table[index]`` -> ``[*index.shape, D]``). With
    ``rows``, row i of the table is row ``rows[i]`` of the chunks laid end to end (a lazy
    selection and reordering: nothing is copied until gathered).
    """

    def __init__(self, chunks: list[np.ndarray], rows: Tensor | None = None) -> None:
        self.chunks, self.rows = chunks, rows
        sizes = torch.tensor([len(c) for c in chunks], dtype=torch.long)
        self.starts = torch.cumsum(sizes, 0) - sizes
        length = int(sizes.sum()) if rows is None else len(rows)
        self.shape = torch.Size([length, chunks[0].shape[1] if chunks else 0])
        self.ndim, self.dtype = 2, torch.float32

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Tensor) -> Tensor:
        index = torch.as_tensor(index)
        flat = index.reshape(-1)
        if self.rows is not None:
            flat = self.rows[flat]
        chunk_of = torch.searchsorted(self.starts, flat, right=True) - 1
        out = torch.empty(len(flat), self.shape[1])
        # rows grouped by chunk in one sort (not one scan of every row per chunk)
        order = torch.argsort(chunk_of, stable=True)
        counts = torch.bincount(chunk_of, minlength=len(self.chunks)).tolist()
        for chunk, rows in zip(range(len(counts)), torch.split(order, counts)):
            if len(rows):
                local = (flat[rows] - self.starts[chunk]).numpy()
                out[rows] = torch.from_numpy(self.chunks[chunk][local])
        return out.reshape(*index.shape, self.shape[1])


class EmbeddingCache:
    """Segments of encoded texts under ``root``, one folder of them per encoder identity."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._meta: dict[Path, dict] = {}  # segments never change: each is read once
        self._chunks: dict[Path, list[np.ndarray]] = {}

    def folder(self, identity: dict) -> Path:
        """Where the segments of the encoder with this identity live."""
        return self.root / fingerprint(identity)

    def segments(self, identity: dict) -> list[tuple[Path, dict]]:
        """Complete segments (with their metadata), in name order; half-written ones and
        staging folders never count."""
        folder = self.folder(identity)
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not (path / META).is_file():
                continue
            if path not in self._meta:
                meta = json.loads((path / META).read_text())
                if len(meta.get("texts", ())) != meta.get("rows"):
                    raise ValueError(f"{path / META}: field 'texts' does not list 'rows' digests")
                self._meta[path] = meta
            found.append((path, self._meta[path]))
        return found

    def places(self, identity: dict, digests: Sequence[str]) -> tuple[list, list[tuple[int, int]]]:
        """The segments, and (segment, row) of each digest, or None where none holds it. A text
        written twice (by two concurrent runs) is read from the first segment by name."""
        segments = self.segments(identity)
        where: dict[str, tuple[int, int]] = {}
        for s, (_, meta) in enumerate(segments):
            for row, digest in enumerate(meta["texts"]):
                where.setdefault(digest, (s, row))
        return segments, [where.get(d) for d in digests]

    def missing(self, identity: dict, digests: Sequence[str]) -> list[int]:
        """Positions of the texts no segment holds, each distinct text once (its first)."""
        _, places = self.places(identity, digests)
        first = {d: i for i, d in reversed(list(enumerate(digests)))}
        return sorted({first[d] for d, place in zip(digests, places) if place is None})

    def table(self, identity: dict, digests: Sequence[str]) -> ArrowEmbeddings:
        """The requested texts' vectors, in the requested order, memory-mapped."""
        segments, places = self.places(identity, digests)
        if any(place is None for place in places):
            absent = sum(place is None for place in places)
            raise KeyError(f"{absent} of {len(digests)} texts are not in {self.folder(identity)}")
        used, rows = row_map(places, [meta["rows"] for _, meta in segments])
        dims = {segments[s][1]["dim"] for s in used}
        if len(dims) > 1:
            raise ValueError(f"{self.folder(identity)}: segments of one encoder differ in 'dim'")
        chunks = [chunk for s in used for chunk in self._arrow(*segments[s])]
        return ArrowEmbeddings(chunks, rows)

    def _arrow(self, path: Path, meta: dict) -> list[np.ndarray]:
        from datasets import load_from_disk

        if path not in self._chunks:
            column = load_from_disk(str(path)).data.table.column("embedding")
            self._chunks[path] = [
                c.values.to_numpy(zero_copy_only=True).reshape(-1, meta["dim"])
                for c in column.chunks
            ]
        return self._chunks[path]

    def add(self, identity: dict, digests: Sequence[str], vectors: Tensor) -> Path:
        """Write one segment atomically: ``vectors[i]`` is the text with ``digests[i]``."""
        import datasets
        from datasets import Dataset, Features, List, Value

        if len(digests) != len(vectors):
            raise ValueError(f"{len(digests)} digests for {len(vectors)} vectors")
        if not torch.isfinite(vectors).all():
            bad = (~torch.isfinite(vectors)).any(-1).nonzero().flatten()
            raise ValueError(
                f"the encoder produced NaN or infinite values for {len(bad)} texts "
                f"(first: text {int(bad[0])}); nothing was cached"
            )
        dim, name = int(vectors.shape[1]), segment_name(digests)
        folder = self.folder(identity)
        folder.mkdir(parents=True, exist_ok=True)
        target, staging = folder / name, folder / f".tmp-{name}-{uuid.uuid4().hex}"
        features = Features({"embedding": List(Value("float32"), length=dim)})
        meta = {"encoder": identity, "dim": dim, "rows": len(digests), "texts": list(digests)}
        bars_were_off = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # a save takes milliseconds; its bar is only noise
        try:
            Dataset.from_dict(
                {"embedding": vectors.float().numpy()}, features=features
            ).save_to_disk(str(staging), num_shards=1)
            (staging / META).write_text(json.dumps(meta, sort_keys=True))  # last: "complete"
            if target.exists() and not (target / META).is_file():  # a stale, incomplete folder
                stale = folder / f".stale-{name}-{uuid.uuid4().hex}"
                os.rename(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(staging, target)  # atomic: the segment appears whole or not at all
            except OSError:  # another process wrote the same segment first: keep theirs
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:  # interrupted: leave no staging folder behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            if not bars_were_off:
                datasets.enable_progress_bars()
        if not (target / META).is_file():
            raise RuntimeError(f"could not write the cache segment {target}")
        return target
