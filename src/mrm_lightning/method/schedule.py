"""Learning-rate schedule: linear warm-up, then cosine decay to zero (the reference's)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Rises linearly over the first ``warmup_fraction * total_steps`` steps (from 1/warm-up
    steps, so the first step is not wasted at lr 0), then follows a half cosine to 0.
    """
    warmup = int(warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
