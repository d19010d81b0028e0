"""Global Bradley-Terry reward model: one linear reward for everybody, no personalization."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.splits import TRAIN
from ..training.baselines import fit_global_reward
from .evaluation import PeerModel


class GlobalRewardModel(PeerModel):
    """r(h) = v . h fitted on the seen users' training pairs pooled (L-BFGS, convex), its L2
    strength chosen on the validation users' held-out pairs: the README's global row.

    Args:
        embedding_dim: D of the input embeddings (linked from the data module).
        l2_grid: L2 strengths tried; the best on validation user-level accuracy is kept.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        l2_grid: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
    ) -> None:
        super().__init__(num_candidates=1, standardize_inputs=False)
        self.save_hyperparameters()
        self.register_buffer("direction", torch.zeros(embedding_dim))

    def fit_to_data(self, datamodule) -> None:
        train = datamodule.pairs(TRAIN, datamodule.split.seen_users)
        direction, _ = fit_global_reward(train, datamodule.validation_pairs(), self.hparams.l2_grid)
        self.direction.copy_(direction)

    def eval_margins(self, batch: dict[str, Tensor], candidate: int) -> Tensor:
        # [B, Q, D] @ [D] -> [B, Q]
        return (batch["query_chosen"] - batch["query_rejected"]) @ self.direction
