"""Base reward functions restricted to the leading principal directions of the inputs.

A sentence encoder's space has hundreds or thousands of dimensions, most of them weak; a
reward direction learned from a few thousand pairs spreads its estimation noise over all of
them. Restricting the linear base functions to the span of the ``r`` leading principal
directions of the training pairs' chosen-minus-rejected differences (what the encoder varies
most between the responses users compare) removes that noise where preferences live there.
Whether they do is an empirical question: the rank is chosen on validation users
(:class:`mrm_lightning.training.module.MetaRewardModel`, ``principal_ranks``), and 0 (no
restriction) is always a candidate.

The restriction is a ``torch.nn.utils.parametrize`` parametrization of the linear layer's
weight: ``W = W_free @ B_r @ B_r^T`` with ``B_r`` the first ``r`` columns of an orthonormal
basis; its cost is a ``[K, D] @ [D, r]`` product per forward, nothing per input row.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def leading_directions(second_moment: Tensor, rank: int) -> Tensor:
    """``[D, rank]`` orthonormal eigenvectors of a ``[D, D]`` second moment, largest
    eigenvalue first."""
    if not 0 < rank <= len(second_moment):
        raise ValueError(f"rank must be in [1, {len(second_moment)}], got {rank}")
    _, vectors = torch.linalg.eigh(second_moment.double())  # ascending eigenvalues
    return vectors[:, -rank:].flip(1)


class PrincipalSubspace(nn.Module):
    """Parametrization projecting a ``[K, D]`` weight onto the span of ``basis[:, :rank]``.

    ``basis`` (``[D, max_rank]``) and ``rank`` are buffers, so checkpoints carry them; rank 0
    leaves the weight free. Leading directions are nested, so one basis serves every rank up to
    ``max_rank``.
    """

    def __init__(self, embedding_dim: int, max_rank: int) -> None:
        super().__init__()
        self.register_buffer("basis", torch.zeros(embedding_dim, max_rank))
        self.register_buffer("rank", torch.tensor(0))

    def forward(self, weight: Tensor) -> Tensor:
        rank = int(self.rank)
        if not rank:
            return weight
        basis = self.basis[:, :rank].to(weight.dtype)
        return (weight @ basis) @ basis.T

    def right_inverse(self, weight: Tensor) -> Tensor:
        """Assigning ``layer.weight = W`` stores ``W``; the layer then reads its projection."""
        return weight
