"""Checkpoints a run can resume from exactly: periodic, written atomically, with random states.

What a checkpoint holds, and who puts it there:
- parameters and buffers (including the adaptation strength chosen on validation), the
  optimizer and the learning-rate schedule, the loops' progress, and the state of every
  ModelCheckpoint: Lightning;
- the position in the current epoch's meta-batches: ``EpisodicDataModule.state_dict``;
- the RPO thresholds so far: ``RobustPersonalization.state_dict``;
- the global random generators of every process (torch, CUDA, numpy, python), which Lightning
  does not save: :class:`ResumeCheckpoint`.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

RANDOM_STATES_KEY = "mrm_random_states"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in its own folder, then renames it into place.

    A run killed while saving leaves the previous checkpoint whole. Lightning's own local
    write goes through a temporary file in the system's temp folder and moves it into place;
    when that folder is on another file system than the checkpoints (``/tmp`` on a compute
    node, checkpoints on shared storage), the move is a copy, and a kill during it leaves a
    truncated file. Object stores (``s3://``...) are written as Lightning writes them.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        fs, local_path = url_to_fs(str(path))
        if not isinstance(fs, LocalFileSystem) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = local_path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            mask = os.umask(0)  # mkstemp makes the file private: give it the usual mode
            os.umask(mask)
            os.chmod(temporary, 0o666 & ~mask)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise


class ResumeCheckpoint(ModelCheckpoint):
    """Saves ``last.ckpt`` every ``every_n_train_steps`` training steps and at the end of
    training, to resume from.

    Resume with ``--ckpt_path last`` (or the file's path) and the same logger version
    (``--trainer.logger.init_args.version``), so that the run continues in its own folder.
    The checkpoint is written between two steps, so the resumed run continues exactly where
    this one was: it also carries the global random generators of every process, which
    Lightning does not save, and restores each process's own on resume (in every checkpoint
    the run writes, not only this callback's).

    Args:
        every_n_train_steps: training steps between two saves.
        dirpath: the folder (default: ``checkpoints/`` in the logger's run folder).
    """

    def __init__(self, every_n_train_steps: int = 100, dirpath: str | None = None) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1, got {every_n_train_steps}")
        # one file, overwritten: version counters would write last-v1.ckpt beside another
        # ModelCheckpoint's last.ckpt instead of replacing it
        super().__init__(
            dirpath=dirpath,
            every_n_train_steps=every_n_train_steps,
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,
        )

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Always, so that last.ckpt ends as the end of training (after its last validation).
        # Lightning's own rule saves here only if this process has saved nothing yet, which
        # differs between an uninterrupted run and a resumed one.
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # every process saves a checkpoint (only rank 0 writes it): gather their states
        states = random_states()
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, states)
            checkpoint[RANDOM_STATES_KEY] = gathered
        else:
            checkpoint[RANDOM_STATES_KEY] = [states]

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get(RANDOM_STATES_KEY)
        if states is None:
            return
        if len(states) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint holds the random states of {len(states)} processes, this run "
                f"has {trainer.world_size}: they are not restored"
            )
            return
        set_random_states(states[trainer.global_rank])


def random_states() -> dict[str, Any]:
    """The global generators' states, as tensors, numbers and strings (loadable with
    ``torch.load(weights_only=True)``)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    """Restore what :func:`random_states` returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
