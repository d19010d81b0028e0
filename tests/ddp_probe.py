"""A callback that records what each DDP process trained on and ended with, for tests/test_ddp.py.

Added to a run from the command line (the tests directory on PYTHONPATH):

    mrm fit --config configs/tiny.yaml --trainer.devices 2 --trainer.strategy ddp \
        --trainer.callbacks+=ddp_probe.DDPProbe --trainer.callbacks.out_dir OUT

At the end of training every process writes ``OUT/rank{global_rank}.pt`` (``torch.save``) with:
    params       name -> detached cpu clone of every entry of the module's state_dict
    thresholds   the RobustPersonalization callback's per-step RPO thresholds (None without it)
    world_size   the trainer's world size
    global_rank  this process's rank
    step_users   one list of user ids per training batch, in order
    users        the sorted ids of every user this process trained on
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from mrm_lightning import RobustPersonalization
from mrm_lightning.data.batch import PairBatch


class DDPProbe(Callback):
    """Writes this process's parameters, RPO thresholds and training users at the end of fit."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.step_users: list[list[int]] = []

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int
    ) -> None:
        users = batch.user if isinstance(batch, PairBatch) else batch["user"]  # MRM's, a peer's
        self.step_users.append([int(u) for u in users.reshape(-1).tolist()])

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rpo = next((cb for cb in trainer.callbacks if isinstance(cb, RobustPersonalization)), None)
        state = pl_module.state_dict()
        record = {
            "params": {name: t.detach().cpu().clone() for name, t in state.items()},
            "thresholds": None if rpo is None else list(rpo.thresholds),
            "world_size": trainer.world_size,
            "global_rank": trainer.global_rank,
            "step_users": [list(users) for users in self.step_users],
            "users": sorted({u for users in self.step_users for u in users}),
        }
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(record, out / f"rank{trainer.global_rank}.pt")
