"""The reward head: K base reward functions over an embedding, mixed by a user's weights.

r_u(h) = sum_k c(w_u)_k * phi_k(h), with c = softmax (the paper: rewards stay in the convex
hull of the base functions) or the identity (a free linear combination).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Combination = Literal["softmax", "linear"]


def mixing(weights: Tensor, combination: Combination) -> Tensor:
    """c(w): the ``[B, K]`` coefficients that weights give the base rewards."""
    if combination == "softmax":
        return torch.softmax(weights, dim=-1)
    if combination == "linear":
        return weights
    raise ValueError(f"combination must be 'softmax' or 'linear', got {combination!r}")


def combine(weights: Tensor, base_rewards: Tensor, combination: Combination) -> Tensor:
    """Mix base rewards with per-user weights.

    Args:
        weights: ``[B, K]`` one weight vector per user.
        base_rewards: ``[B, P, K]`` phi_k for each of a user's P responses.
        combination: ``"softmax"`` or ``"linear"``.

    Returns:
        ``[B, P]`` the users' rewards.
    """
    mix = mixing(weights, combination)
    # [B, P, K] @ [B, K, 1]: the product einsum("bpk,bk->bp") makes, without its parsing
    return (base_rewards @ mix.unsqueeze(-1)).squeeze(-1)


class BaseRewardFunctions(nn.Module):
    """phi(h) in R^K: a linear map without bias (the paper), or a small MLP.

    A bias would cancel in chosen-minus-rejected, so the linear map has none.

    Args:
        embedding_dim: D, the size of the frozen encoder's vectors.
        num_base_rewards: K, the number of base reward functions.
        hidden_dim: width of the MLP's hidden layer; 0 for the linear map.
        input_scale: multiplies the embedding first, on top of the fitted standardisation
            (the reference uses a fixed 0.01 for 4096-d reward-model states).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_base_rewards: int = 2,
        hidden_dim: int = 0,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if num_base_rewards < 1:
            raise ValueError(f"num_base_rewards (K) must be >= 1, got {num_base_rewards}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.input_scale = input_scale
        # fitted on the training data before meta-training (MetaRewardModel.setup); a buffer,
        # so checkpoints carry it and scoring sees inputs on the scale training saw.
        self.register_buffer("fitted_scale", torch.ones(()))
        if hidden_dim > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(embedding_dim, hidden_dim),
                nn.GELU(),
                nn.Linear(hidden_dim, num_base_rewards, bias=False),
            )
        else:
            self.net = nn.Linear(embedding_dim, num_base_rewards, bias=False)

    @property
    def scale(self) -> Tensor:
        """What an embedding is multiplied by before the base functions."""
        return self.fitted_scale * self.input_scale

    def forward(self, embeddings: Tensor) -> Tensor:
        """``[..., D]`` -> ``[..., K]``, the same as ``net(embeddings * scale)``.

        The scale is applied to the K outputs (linear) or to the first layer's weight (MLP),
        never to the embeddings: at D = 4096 a scaled copy of the meta-batch costs as much
        as the base functions themselves.
        """
        scale = self.scale
        if isinstance(self.net, nn.Linear):
            flat = embeddings.reshape(-1, embeddings.shape[-1])  # [N, D]
            # [K, D] @ [D, N], read back as [N, K]: on CPU this order of the product reads
            # the rows about 1.5x faster than F.linear's [N, D] @ [D, K]; same numbers.
            rewards = (self.net.weight @ flat.T).T * scale  # [N, K]
            return rewards.reshape(*embeddings.shape[:-1], rewards.shape[-1])
        first, rest = self.net[0], self.net[1:]
        return rest(F.linear(embeddings, first.weight * scale, first.bias))
