"""`mrm embed`: the encoder pass as a Lightning predict loop, sharded over devices.

    mrm embed --config configs/tldr.yaml                       # one device
    mrm embed --config configs/tldr.yaml --trainer.devices 8 --trainer.strategy ddp

Each process encodes its share of the length-sorted batches and writes it to a shard file;
process 0 merges the shards into one cache entry (written atomically). Training later finds
the entry and never loads the encoder. Without this step, `mrm fit` encodes in its
`prepare_data` on one device.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from .encoder import TextEncoder, TextInput
from .sources.text import TextPreferences, index_texts


class EncoderModule(LightningModule):
    """Wraps a TextEncoder for ``Trainer.predict``; the weights load on each process."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def setup(self, stage: str) -> None:
        if self.encoder._model is None:
            self.encoder.load(self.trainer.strategy.root_device)
        self.model = self.encoder._model  # registered, so Lightning places it on the device

    def predict_step(
        self, batch: tuple[Tensor, list[TextInput]], batch_idx: int
    ) -> tuple[Tensor, Tensor]:
        rows, items = batch
        return rows, self.encoder.encode_batch(items)


class ShardWriter(BasePredictionWriter):
    """Saves each process's (rows, vectors) to ``folder/rank{r}-of-{world}.pt`` at the end."""

    def __init__(self, folder: Path) -> None:
        super().__init__(write_interval="epoch")
        self.folder = folder

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        rows = (
            torch.cat([r for r, _ in predictions])
            if predictions
            else torch.empty(0, dtype=torch.long)
        )
        vectors = torch.cat([v for _, v in predictions]) if predictions else torch.empty(0, 0)
        name = f"rank{trainer.global_rank}-of-{trainer.world_size}.pt"
        torch.save((rows, vectors), self.folder / name)


def length_sorted_batches(
    items: list[TextInput], order: list[int], batch_size: int, processes: int
) -> list[tuple[Tensor, list]]:
    """Batches of similar-length texts, each with the rows it fills; never fewer batches than
    processes (Lightning's predict sampler gives every process at least one)."""
    size = max(1, min(batch_size, -(-len(items) // processes)))
    return [
        (torch.tensor(order[i : i + size]), [items[j] for j in order[i : i + size]])
        for i in range(0, len(order), size)
    ]


def embed_source(source: TextPreferences, trainer: Trainer) -> Path:
    """Encode ``source``'s distinct texts with ``trainer`` (any devices) into its cache."""
    items = index_texts(source.records())[0]
    identity = source.encoder.identity()
    key = source.cache_key(items, identity)
    if source.cache.load(key) is not None:
        rank_zero_info(f"already cached: {source.cache.path(key)}")
        return source.cache.path(key)
    # every process derives the same folder from the key: before predict() launches the
    # processes there is no process group to broadcast a name through.
    staging = source.cache.root / f".tmp-embed-{key}"
    staging.mkdir(parents=True, exist_ok=True)
    batches = length_sorted_batches(
        items, source.encoder.length_order(items), source.encoder.batch_size, trainer.world_size
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)
    trainer.callbacks.append(ShardWriter(staging))
    started = time.perf_counter()
    trainer.predict(EncoderModule(source.encoder), loader, return_predictions=False)
    trainer.strategy.barrier()
    path = source.cache.path(key)
    if trainer.is_global_zero:
        merged = None
        for shard in sorted(staging.glob(f"rank*-of-{trainer.world_size}.pt")):
            rows, vectors = torch.load(shard)
            if merged is None:
                merged = torch.full((len(items), vectors.shape[1]), float("nan"))
            merged[rows] = vectors  # a sampler's padding repeats rows: same values, harmless
        shutil.rmtree(staging, ignore_errors=True)
        seconds = time.perf_counter() - started
        source.cache.save(key, merged, {"encoder": identity, "texts": len(items)})
        rank_zero_info(
            f"encoded {len(items)} texts on {trainer.world_size} process(es) in "
            f"{seconds:.1f} s ({len(items) / seconds:.1f} texts/s); cached in {path}"
        )
    trainer.strategy.barrier()
    return path
