"""Choosing how strongly to adapt, on validation users: a pure function, tested by hand.

At every validation MRM adapts the validation users with the inner learning rate times each
of a few scales (0 is no adaptation: the prior w0). The scale with the best validation
user-level accuracy is kept with that checkpoint and used for test and for scoring, so
adaptation is switched down, or off, wherever it does not help new users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from torch import Tensor


def select_adaptation(accuracies: Sequence[float], lr_scales: Sequence[float]) -> int:
    """Index of the best accuracy; a tie goes to the weaker adaptation (the smaller scale).

    NaN (no validation user) never wins unless everything is NaN, then the weakest scale does.
    """
    if len(accuracies) != len(lr_scales) or not lr_scales:
        raise ValueError("need one accuracy per adaptation scale, and at least one scale")

    def key(index: int) -> tuple[float, float]:
        accuracy = accuracies[index]
        return (-math.inf if math.isnan(accuracy) else accuracy, -lr_scales[index])

    return max(range(len(lr_scales)), key=key)


def clearly_better(candidate: Tensor, reference: Tensor, margin_se: float) -> bool:
    """Whether per-user accuracies ``candidate`` beat ``reference`` (the same users, paired)
    by more than ``margin_se`` standard errors of the mean paired difference.

    Choosing the best of many checkpoints and strengths on a few validation pairs per user
    favours whichever got lucky; a fixed reference (the warm start) is replaced only when the
    best candidate beats it clearly. With fewer than two users, any positive mean difference.
    """
    difference = candidate.double() - reference.double()
    if not len(difference):
        return False
    mean = float(difference.mean())
    if len(difference) < 2:
        return mean > 0
    standard_error = float(difference.std()) / len(difference) ** 0.5
    return mean > 0 and mean > margin_se * standard_error


def family_margin(alpha: float, comparisons: int) -> float:
    """Standard errors a candidate must beat the warm start by, so that over ``comparisons``
    candidates compared with it so far (every strength at every validation), the chance that
    noise alone replaces it stays below ``alpha`` (one-sided, Bonferroni, normal approximation).

    Each checkpoint's best strength is compared with the same warm start, and the checkpoint
    callback keeps the best of them: a fixed margin lets a long run's luckiest validation win.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return NormalDist().inv_cdf(1 - alpha / max(comparisons, 1))
