"""User-level accuracy as a torchmetrics Metric, correct under DDP.

The paper's metric: per user, the fraction of test pairs ranked correctly; then the
unweighted mean over users (a user with 5 pairs counts as much as one with 500).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


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
        # per user, pairs ranked correctly and pairs; accuracies are taken when computed, so
        # that an update (every training step) is a few operations. Gathered with "cat".
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("pairs", default=[], dist_reduce_fx="cat")

    def update(self, margin: Tensor, mask: Tensor, owner: Tensor | None = None) -> None:
        """``owner``: ``margin`` holds the real pairs of ``mask`` only, packed (``[M]``), and
        ``owner`` ``[M]`` each one's user (its row of ``mask``)."""
        pairs = mask.sum(-1)
        if owner is None:
            self.correct.append(((margin > 0) & mask).sum(-1))
        else:
            self.correct.append(torch.zeros_like(pairs).index_add_(0, owner, (margin > 0).long()))
        self.pairs.append(pairs)

    def _accuracies(self) -> Tensor:
        """Every user's accuracy (users with pairs only), from the states as they stand."""
        correct, pairs = self.correct, self.pairs
        if isinstance(correct, list):  # not yet concatenated (no update, or no sync)
            if not correct:
                return torch.empty(0)
            correct, pairs = dim_zero_cat(correct), dim_zero_cat(pairs)
        has_pairs = pairs > 0
        # float64 ratios, so that the mean over many users is the same in any order
        return correct[has_pairs].double() / pairs[has_pairs]

    @property
    def users(self) -> Tensor:
        """How many users (with pairs) have been seen."""
        return torch.tensor(len(self._accuracies()))

    def compute(self) -> Tensor:
        accuracy = self._accuracies()
        if not len(accuracy):
            return torch.tensor(float("nan"))
        return accuracy.mean().float()

    def per_user_values(self) -> Tensor:
        """Every user's accuracy, from all processes under DDP (a collective: call it on all)."""
        with self.sync_context(should_sync=True):  # a no-op outside torch.distributed
            return self._accuracies().float()


class TemperedNLLGrid(Metric):
    """Mean NLL of preference probabilities over a grid: for each of L ways of predicting (a
    prior precision each) and T temperatures, ``-log sigmoid(logit(p) / T)`` of each pair's
    probability ``p`` that its chosen response wins. Sums and a count, summed across processes.

    ``update(probs)`` takes ``[L, M]`` probabilities of the same M pairs; ``compute()`` gives
    the ``[L, T]`` mean NLL (NaN before any pair).
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, ways: int, temperatures: tuple[float, ...]) -> None:
        super().__init__()
        self.temperatures = torch.tensor(temperatures, dtype=torch.float64)
        self.add_state("total", default=torch.zeros(ways, len(temperatures), dtype=torch.float64),
                       dist_reduce_fx="sum")  # fmt: skip
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: Tensor) -> None:
        logits = torch.logit(probs.double().clamp(1e-12, 1 - 1e-12))  # [L, M]
        tempered = logits.unsqueeze(1) / self.temperatures.to(logits.device)[:, None]
        self.total += -torch.nn.functional.logsigmoid(tempered).sum(-1)  # [L, T]
        self.count += probs.shape[-1]

    def compute(self) -> Tensor:
        return self.total / self.count
