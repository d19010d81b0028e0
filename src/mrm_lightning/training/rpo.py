"""The Robust Personalization Objective (RPO) as a callback: more weight on worst-fitted users.

Installed into the module's ``task_loss_reducer`` for the run; removing the callback from the
config gives plain MAML (the mean of the users' query losses).
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from ..method.losses import rpo_threshold, rpo_weights


class RobustPersonalization(Callback):
    """RPO: sum_i a_i L_i, a_i = sigmoid((L_i - tau) / gamma), tau = quantile(L, 1 - rho).

    Under DDP the quantile is taken over the losses of the whole global meta-batch (gathered
    from every process), so all processes use the same tau. DDP averages gradients over
    processes, so each process's share is scaled to make the result the gradient of the
    global objective.

    Args:
        tail_fraction: rho in (0, 1], the share of users treated as the hard tail.
        smoothness: gamma; <= 0 gives the hard mask: exactly ceil(rho * B) users of the global
            meta-batch, those with the largest losses (a CVaR-like tail sum).
        detach_weights: treat a_i as constants (the reference code does not).
        reduction: ``sum`` over users (the reference) or ``mean`` (divide by the global
            meta-batch size, which keeps the objective's scale independent of batch size).
        histogram_every_n_steps: how often the weights and losses go to TensorBoard.
    """

    def __init__(
        self,
        tail_fraction: float = 0.5,
        smoothness: float = 0.5,
        detach_weights: bool = False,
        reduction: Literal["sum", "mean"] = "sum",
        histogram_every_n_steps: int = 50,
    ) -> None:
        if not 0.0 < tail_fraction <= 1.0:
            raise ValueError(
                f"RobustPersonalization.tail_fraction (rho) must be in (0, 1], got {tail_fraction}"
            )
        if reduction not in ("sum", "mean"):
            raise ValueError(
                f"RobustPersonalization.reduction must be 'sum' or 'mean', got {reduction!r}"
            )
        self.tail_fraction, self.smoothness = tail_fraction, smoothness
        self.detach_weights, self.reduction = detach_weights, reduction
        self.histogram_every_n_steps = histogram_every_n_steps
        self.thresholds: list[float] = []  # every step's tau, for inspection and tests
        self._module: LightningModule | None = None
        self._last: tuple[Tensor, Tensor] | None = None  # global losses and weights

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._module = pl_module
        pl_module.task_loss_reducer = self

    def state_dict(self) -> dict:
        """Saved in checkpoints, so that a resumed run's ``thresholds`` continue the list."""
        return {"thresholds": list(self.thresholds)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.thresholds = [float(t) for t in state_dict.get("thresholds", [])]

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if pl_module.task_loss_reducer is self:
            pl_module.task_loss_reducer = None

    def __call__(self, losses: Tensor) -> Tensor:
        """This process's share of the RPO objective for its ``[B]`` per-user losses."""
        module = self._module
        assert module is not None, "RobustPersonalization is used before setup()"
        attached = module._trainer is not None  # without a Trainer: one process
        # [W * B] in rank order, the same on every process
        global_losses = (
            module.all_gather(losses.detach()).reshape(-1) if attached else losses.detach()
        )
        tau = rpo_threshold(global_losses, self.tail_fraction)
        global_weights = rpo_weights(global_losses, tau, self.smoothness, self.tail_fraction)
        if self.smoothness > 0:  # a user's weight depends on its own loss: keep its gradient
            weights = rpo_weights(losses, tau, self.smoothness)
        else:  # the hard tail is chosen over the global batch: this process's slice of it
            rank = module.global_rank if attached else 0
            weights = global_weights[rank * len(losses) : (rank + 1) * len(losses)]
        if self.detach_weights:
            weights = weights.detach()
        world = module.trainer.world_size if attached else 1
        objective = (weights * losses).sum() * world  # DDP then divides the gradient by world
        if self.reduction == "mean":
            objective = objective / global_losses.numel()
        self.thresholds.append(float(tau))
        self._last = (global_losses, global_weights)
        return objective

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self._last is None:
            return
        losses, weights = self._last
        hardest = losses.topk(max(1, int(round(self.tail_fraction * len(losses))))).values
        pl_module.log_dict(
            {
                "rpo/threshold": torch.tensor(self.thresholds[-1]),
                "rpo/hardest_user_loss": losses.max(),
                "rpo/tail_mean_loss": hardest.mean(),
                "rpo/weight_mean": weights.mean(),
                "rpo/weight_max": weights.max(),
            },
            batch_size=len(losses),
        )
        step = trainer.global_step
        if (
            isinstance(trainer.logger, TensorBoardLogger)
            and trainer.is_global_zero
            and step % self.histogram_every_n_steps == 0
        ):
            trainer.logger.experiment.add_histogram("rpo/weights", weights, step)
            trainer.logger.experiment.add_histogram("rpo/user_losses", losses, step)
