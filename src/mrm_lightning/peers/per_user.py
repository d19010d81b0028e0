"""Per-user reward models from scratch: each user's own pairs only, L2-regularised."""

from __future__ import annotations

import torch
from torch import Tensor

from ..method.bradley_terry import fit_bradley_terry_linear
from .evaluation import PeerModel


class PerUserModel(PeerModel):
    """r_u(h) = v_u . h, a ridge Bradley-Terry (logistic) fit on the user's training pairs
    alone; nothing is shared between users. The L2 strength is chosen on validation users.

    Args:
        embedding_dim: D of the input embeddings (linked from the data module).
        l2_grid: L2 strengths tried (on standardised inputs), weakest first.
        max_iter: L-BFGS iterations per user fit.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        l2_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0),
        max_iter: int = 50,
    ) -> None:
        super().__init__(num_candidates=len(l2_grid))
        self.save_hyperparameters()

    def eval_margins(self, batch: dict[str, Tensor], candidate: int) -> Tensor:
        l2 = self.hparams.l2_grid[candidate]
        support = self.scaled(batch, "support_chosen") - self.scaled(batch, "support_rejected")
        query = self.scaled(batch, "query_chosen") - self.scaled(batch, "query_rejected")
        mask = batch["support_mask"]  # [B, S]
        margins = torch.zeros(query.shape[:2], dtype=query.dtype)  # [B, Q]
        for user in range(len(mask)):
            if mask[user].any():  # a user without pairs keeps margin 0 (counted wrong)
                weights = fit_bradley_terry_linear(
                    support[user, mask[user]], l2, max_iter=self.hparams.max_iter
                )  # [D]
                margins[user] = query[user] @ weights
        return margins
