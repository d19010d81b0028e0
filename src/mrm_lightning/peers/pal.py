"""PAL-style mixture of K prototypes: a user's ideal point mixes shared prototypes."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from ..method.maml import InnerOptimizer
from .user_weights import UserWeightsModel


class PAL(UserWeightsModel):
    """Ideal-point mixture model (after Chen et al. 2025, from the paper's description).

    Responses are mapped to a latent space, ``f(h) = A h`` in R^M; K prototypes ``p_k`` live
    there; a user's ideal point is ``a_u = sum_k softmax(w_u)_k p_k`` and its reward is
    ``-|f(h) - a_u|^2``: a response is better the closer it lies to the user's ideal point.
    Since the mixture weights sum to 1, that reward equals (up to a per-user constant, which
    cancels in a pair) ``sum_k softmax(w_u)_k * phi_k(h)`` with
    ``phi_k(h) = 2 p_k . f(h) - |f(h)|^2``: the same weight-mixing structure as LoRe and MRM,
    with quadratic base functions. A new user learns only its mixture weights.

    Args:
        embedding_dim: D of the input embeddings (linked from the data module).
        num_base_rewards: K prototypes.
        latent_dim: M, the size of the space of the ideal points.
        new_user_steps: steps when fitting a new user's mixture weights.
        new_user_lr: their learning rate.
        new_user_optimizer: ``adam`` or ``sgd``.
        pull_grid: pulls towards the seen users' mean weights for new users, chosen on
            validation users (weakest first).
        optimizer: for the map, the prototypes and the seen users' weights.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        num_base_rewards: int = 4,
        latent_dim: int = 16,
        new_user_steps: int = 100,
        new_user_lr: float = 0.05,
        new_user_optimizer: InnerOptimizer = "adam",
        pull_grid: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0),
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__(
            num_base_rewards,
            "softmax",  # an ideal point is a convex combination of the prototypes
            new_user_steps,
            new_user_lr,
            new_user_optimizer,
            pull_grid,
            optimizer,
        )
        self.save_hyperparameters(ignore=["optimizer"])
        self.hparams["combination"] = "softmax"
        self.project = nn.Linear(embedding_dim, latent_dim, bias=False)
        self.prototypes = nn.Parameter(torch.randn(num_base_rewards, latent_dim))

    def base_rewards(self, embeddings: Tensor) -> Tensor:
        latent = self.project(embeddings)  # [..., M]
        # [..., K]: 2 p_k . f(h) - |f(h)|^2
        return 2 * latent @ self.prototypes.T - latent.square().sum(-1, keepdim=True)
