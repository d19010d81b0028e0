"""A run that fails before its first training step leaves no run folder behind.

Lightning creates the run's log folder (``runs/NAME/version_N``: config.yaml, hparams.yaml,
an empty TensorBoard event file) while it sets up, before the data is read; a run stopped there
by a mistake in the data or the settings would otherwise leave a folder that TensorBoard lists
as a run with nothing in it. ``MRMCLI`` adds :class:`DiscardFailedRun` to every trainer it
builds (``training.lightning_cli.cli_main``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

# what Lightning writes into a run folder before the first step
SET_UP_FILES = ("config.yaml", "hparams.yaml", "events.out.tfevents.*")


def only_set_up_files(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but what set-up writes (no checkpoint, no results)."""
    written = [path for path in folder.rglob("*") if path.is_file()]
    return all(any(path.match(pattern) for pattern in SET_UP_FILES) for path in written)


class DiscardFailedRun(Callback):
    """On an exception before the first training step of a fit, removes the run's log folder
    where it holds only set-up files (never a folder with a checkpoint: a resumed run's)."""

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException):
        if trainer.state.fn != "fit" or trainer.global_step > 0 or not trainer.is_global_zero:
            return
        folder = Path(trainer.log_dir) if trainer.log_dir else None
        if folder is None or not folder.is_dir() or not only_set_up_files(folder):
            return
        shutil.rmtree(folder, ignore_errors=True)
        parent = folder.parent  # runs/NAME, if this run was its only one
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
