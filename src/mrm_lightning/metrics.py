"""User-level accuracy as a torchmetrics Metric, correct under DDP.

The paper's metric: per user, the fraction of test pairs ranked correctly; then the
unweighted mean over users (a user with 5 pairs counts as much as one with 500).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from .losses import per_user_accuracy


class UserAccuracy(Metric):
    """Mean over users of per-user pairwise accuracy; also keeps every user's accuracy.

    ``update(margin, mask)`` takes ``[B, P]`` margins (reward of chosen minus rejected) and the
    ``[B, P]`` mask of real pairs. Users with no pair in ``mask`` are ignored. Each user must
    appear in exactly one ``update`` call per epoch (one user, one row).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state(
            "accuracy_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("users", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        # every user's accuracy, for histograms and the hardest users; gathered with "cat".
        self.add_state("per_user", default=[], dist_reduce_fx="cat")

    def update(self, margin: Tensor, mask: Tensor) -> None:
        has_pairs = mask.any(-1)
        accuracy = per_user_accuracy(margin.detach(), mask)[has_pairs]
        self.accuracy_sum += accuracy.sum(dtype=torch.float64)
        self.users += has_pairs.sum()
        self.per_user.append(accuracy.float())

    def compute(self) -> Tensor:
        if self.users == 0:
            return torch.tensor(float("nan"))
        return (self.accuracy_sum / self.users).float()

    def per_user_values(self) -> Tensor:
        """Every user's accuracy, from all processes under DDP (a collective: call it on all)."""
        with self.sync_context(should_sync=True):  # a no-op outside torch.distributed
            values = self.per_user
            if isinstance(values, list):
                values = dim_zero_cat(values) if values else torch.empty(0)
            return values.clone()
