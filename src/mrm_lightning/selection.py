"""Choosing how strongly to adapt, on validation users: a pure function, tested by hand.

At every validation MRM adapts the validation users with the inner learning rate times each
of a few scales (0 is no adaptation: the prior w0). The scale with the best validation
user-level accuracy is kept with that checkpoint and used for test and for scoring, so
adaptation is switched down, or off, wherever it does not help new users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


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
