"""The benchmark's pure functions: the worst users' accuracy, few-shot support masks, and
mean and spread over seeds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import IterableDataset


def worst_fraction_mean(per_user: Tensor | Sequence[float], fraction: float = 0.1) -> float:
    """Mean accuracy of the worst ``fraction`` of users: the ``ceil(fraction * n)`` lowest
    per-user accuracies (at least one user); NaN for no user."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    values = torch.as_tensor(per_user, dtype=torch.float64).flatten()
    if not len(values):
        return float("nan")
    count = max(1, math.ceil(fraction * len(values) - 1e-9))
    return float(values.sort().values[:count].mean())


def truncate_support(mask: Tensor, users: Tensor, shots: int, seed: int) -> Tensor:
    """Keep a seeded random ``shots`` of each user's real support pairs; the rest is masked.

    Args:
        mask: ``[B, S]`` True for each user's real support pairs.
        users: ``[B]`` user ids: a user's subset depends only on ``(seed, user, shots)``.
        shots: pairs kept per user (all of them when it has no more).
        seed: the subset's seed.

    Returns:
        ``[B, S]`` bool, a subset of ``mask`` with ``min(shots, real pairs)`` per row.
    """
    kept = torch.zeros_like(mask)
    for row, user in enumerate(users.tolist()):
        real = mask[row].nonzero().flatten()  # [R]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + user * 101 + shots)
        chosen = real[torch.randperm(len(real), generator=gen)[:shots]]
        kept[row, chosen] = True
    return kept


class TruncatedSupport(IterableDataset):
    """Evaluation batches (an iterable of dicts) with each user's support cut to ``shots``;
    wrap in ``DataLoader(..., batch_size=None)``."""

    def __init__(self, batches: Iterable[dict[str, Tensor]], shots: int, seed: int) -> None:
        super().__init__()
        self.batches, self.shots, self.seed = batches, shots, seed

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for batch in self.batches:
            mask = truncate_support(batch["support_mask"], batch["user"], self.shots, self.seed)
            yield {**batch, "support_mask": mask}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for one seed; NaN propagates)."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
