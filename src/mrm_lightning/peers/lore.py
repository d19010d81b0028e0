"""LoRe-style low-rank reward model: a shared basis of K linear reward functions."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from ..method.heads import Combination
from ..method.maml import InnerOptimizer
from .user_weights import UserWeightsModel


class LoRe(UserWeightsModel):
    """Low-rank personalized rewards (after Bose et al. 2025, from the paper's description):
    ``r_u(h) = sum_k c(w_u)_k * (b_k . h)``, a basis ``B`` of K reward directions shared by all
    users and per-user weights, learned jointly on the seen users by Bradley-Terry; a new user
    fits only its K weights, the basis frozen. Unlike MRM, nothing is meta-learned for fast
    adaptation: the basis is fitted to the seen users' own weights.

    Args:
        embedding_dim: D of the input embeddings (linked from the data module).
        num_base_rewards: K basis reward functions.
        combination: ``softmax`` (the paper's simplex weights) or ``linear``.
        new_user_steps: steps when fitting a new user's weights.
        new_user_lr: their learning rate.
        new_user_optimizer: ``adam`` or ``sgd``.
        pull_grid: pulls towards the seen users' mean weights for new users, chosen on
            validation users (weakest first).
        optimizer: for the basis and the seen users' weights.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        num_base_rewards: int = 4,
        combination: Combination = "softmax",
        new_user_steps: int = 100,
        new_user_lr: float = 0.05,
        new_user_optimizer: InnerOptimizer = "adam",
        pull_grid: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0),
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__(
            num_base_rewards,
            combination,
            new_user_steps,
            new_user_lr,
            new_user_optimizer,
            pull_grid,
            optimizer,
        )
        self.save_hyperparameters(ignore=["optimizer"])
        self.basis = nn.Linear(embedding_dim, num_base_rewards, bias=False)

    def base_rewards(self, embeddings: Tensor) -> Tensor:
        return self.basis(embeddings)  # [..., D] -> [..., K]
