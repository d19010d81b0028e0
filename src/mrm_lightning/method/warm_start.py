"""Starting MRM from what a global model already knows: input standardisation and warm start.

Two pure functions, used by :class:`mrm_lightning.training.module.MetaRewardModel` before
meta-training:

- :func:`standardizing_scale`: one number that brings the chosen-minus-rejected differences of
  the training pairs to unit root-mean-square per dimension. Unit-length sentence vectors and
  raw LLM hidden states differ by orders of magnitude; after this, one set of learning rates
  fits both. It is stored with the model (a buffer), so scoring uses the same scale.
- :func:`warm_start_rows`: base reward functions whose uniform mix (the initial w0) is exactly
  a given global reward direction, keeping the random rows' differences so that users can
  still move away from it. MRM's prior then starts where the global Bradley-Terry model is.
"""

from __future__ import annotations

from torch import Tensor


def standardizing_scale(differences: Tensor) -> float:
    """``1 / sqrt(mean(d^2))`` over every entry of ``[P, D]`` pair differences (1 if all zero)."""
    mean_square = float(differences.double().square().mean()) if differences.numel() else 0.0
    return scale_for_mean_square(mean_square)


def scale_for_mean_square(mean_square: float) -> float:
    """``1 / sqrt(mean_square)``, or 1 where it is 0: :func:`standardizing_scale` given the mean
    square already (computed in blocks by
    :func:`mrm_lightning.training.baselines.mean_square_difference` when the differences would
    not fit in memory at once)."""
    return 1.0 / mean_square**0.5 if mean_square > 0 else 1.0


def warm_start_rows(rows: Tensor, direction: Tensor) -> Tensor:
    """``[K, D]`` rows whose mean is ``direction`` and whose deviations are those of ``rows``.

    With weights 1/K each (the linear head's w0, or softmax of zeros) the mixed reward
    ``mean_k rows_k . x`` then equals ``direction . x`` exactly.
    """
    return direction.to(rows.dtype).unsqueeze(0) + (rows - rows.mean(0, keepdim=True))
