"""Linear Bradley-Terry fits and user-level accuracy on plain tensors of pair differences."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def fit_bradley_terry_linear(differences: Tensor, l2: float, max_iter: int = 200) -> Tensor:
    """argmin_v mean(-log sigmoid(d . v)) + l2 * |v|^2, by L-BFGS (the problem is convex)."""
    weights = torch.zeros(differences.shape[1], dtype=differences.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = -F.logsigmoid(differences @ weights).mean() + l2 * weights.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach()


def user_level_accuracy(margins: Tensor, users: Tensor) -> tuple[float, int]:
    """Mean over users of per-user accuracy for flat ``[P]`` margins; also the user count."""
    distinct, row = torch.unique(users, return_inverse=True)
    correct = torch.zeros(len(distinct)).index_add_(0, row, (margins > 0).float())
    total = torch.zeros(len(distinct)).index_add_(0, row, torch.ones(len(margins)))
    return float((correct / total).mean()) if len(distinct) else float("nan"), len(distinct)
