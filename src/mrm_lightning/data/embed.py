"""`mrm embed`: the encoder pass as a Lightning predict loop, sharded over devices.

    mrm embed --config configs/tldr.yaml                       # one device
    mrm embed --config configs/tldr.yaml --trainer.devices 8 --trainer.strategy ddp

Only the texts the cache lacks are encoded (texts a run or an earlier `mrm embed` already
encoded with the same encoder are skipped). Each process encodes its share of the
length-sorted batches and writes it to a shard file; process 0 merges the shards into one new
cache segment (written atomically). Training later finds every text cached and never loads
the encoder. Without this step, `mrm fit` encodes in its `prepare_data` on one device.
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

from .cache import segment_name, text_digests
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
    """Encode those of ``source``'s distinct texts that its cache lacks with ``trainer`` (any
    devices), as one new cache segment; return the encoder's cache folder."""
    items = index_texts(source.records())[0]
    identity = source.encoder.identity()
    digests = text_digests(items)
    missing = source.cache.missing(identity, digests)
    folder = source.cache.folder(identity)
    if not missing:
        rank_zero_info(f"already cached: all {len(items)} texts, in {folder}")
        return folder
    new, new_digests = [items[i] for i in missing], [digests[i] for i in missing]
    # every process derives the same folder from what it is about to encode: before predict()
    # launches the processes there is no process group to broadcast a name through. (Should
    # two processes see different missing texts, their shards land in different folders, the
    # merge leaves NaN rows, and `add` refuses them: nothing wrong is cached.)
    staging = folder / f".tmp-embed-{segment_name(new_digests)}"
    staging.mkdir(parents=True, exist_ok=True)
    batches = length_sorted_batches(
        new, source.encoder.length_order(new), source.encoder.batch_size, trainer.world_size
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)
    trainer.callbacks.append(ShardWriter(staging))
    started = time.perf_counter()
    trainer.predict(EncoderModule(source.encoder), loader, return_predictions=False)
    trainer.strategy.barrier()
    if trainer.is_global_zero:
        merged = None
        for shard in sorted(staging.glob(f"rank*-of-{trainer.world_size}.pt")):
            rows, vectors = torch.load(shard)
            if merged is None:
                merged = torch.full((len(new), vectors.shape[1]), float("nan"))
            merged[rows] = vectors  # a sampler's padding repeats rows: same values, harmless
        shutil.rmtree(staging, ignore_errors=True)
        seconds = time.perf_counter() - started
        path = source.cache.add(identity, new_digests, merged)
        rank_zero_info(
            f"encoded {len(new)} of {len(items)} texts (the rest were cached) on "
            f"{trainer.world_size} process(es) in {seconds:.1f} s "
            f"({len(new) / seconds:.1f} texts/s); cached in {path}"
        )
    trainer.strategy.barrier()
    return folder
