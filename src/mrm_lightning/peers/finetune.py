"""The global reward model fine-tuned per user: a few gradient steps on the user's pairs."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.splits import TRAIN
from ..method.maml import adapt, pair_margins
from ..training.baselines import fit_global_reward
from .evaluation import PeerModel


class FineTunedGlobal(PeerModel):
    """Start every user at the global Bradley-Terry model v (fitted on the seen users' pairs,
    L2 chosen on validation), then take ``steps`` SGD steps on the user's own pairs. The step
    size is chosen on validation users among ``lr_scales`` (0: the global model itself).

    It is MRM's inner loop with the D embedding coordinates as base functions and no
    meta-learning: :func:`mrm_lightning.method.maml.adapt` with ``combination="linear"``.

    Args:
        embedding_dim: D of the input embeddings (linked from the data module).
        steps: fine-tuning steps per user.
        lr_scales: candidate step sizes in units of 1/D (on standardised inputs a step of
            1/D moves a margin by about one gradient's worth); include 0.
        l2_grid: L2 strengths tried for the global model.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        steps: int = 5,
        lr_scales: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0),
        l2_grid: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
    ) -> None:
        super().__init__(num_candidates=len(lr_scales))
        self.save_hyperparameters()
        self.register_buffer("direction", torch.zeros(embedding_dim))  # on scaled inputs

    def fit_to_data(self, datamodule) -> None:
        train = datamodule.pairs(TRAIN, datamodule.split.seen_users)
        direction, _ = fit_global_reward(train, datamodule.validation_pairs(), self.hparams.l2_grid)
        self.direction.copy_(direction / self.input_scale)  # the same reward on scaled inputs

    def eval_margins(self, batch: dict[str, Tensor], candidate: int) -> Tensor:
        hp = self.hparams
        weights = adapt(
            self.direction,
            self.scaled(batch, "support_chosen"),  # [B, S, D]: the coordinates are the bases
            self.scaled(batch, "support_rejected"),
            batch["support_mask"],
            steps=hp.steps,
            lr=hp.lr_scales[candidate] / hp.embedding_dim,
            first_order=True,
            combination="linear",
        )  # [B, D]
        return pair_margins(
            weights.detach(),
            self.scaled(batch, "query_chosen"),
            self.scaled(batch, "query_rejected"),
            "linear",
        )  # [B, Q]
