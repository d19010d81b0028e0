"""How well preference probabilities are calibrated, and a temperature that fixes their scale.

A predicted probability ``p`` that the first of two responses is preferred is calibrated when,
among the pairs given ``p``, a share ``p`` really had the first one preferred. Measured here:

- expected calibration error (ECE): equal-width bins of ``p`` over [0, 1], the gap between
  each bin's mean ``p`` and its observed frequency, weighted by the bin's share of pairs
  (torchmetrics' ``binary_calibration_error``, norm ``l1``);
- the Brier score, the mean squared gap between ``p`` and the 0/1 label;
- the negative log-likelihood, which the temperature minimises.

Temperature scaling: ``p_T = sigmoid(logit(p) / T)``; ``T > 1`` softens over-confident
probabilities, ``T < 1`` sharpens timid ones, and 0.5 stays 0.5. ``T`` is fitted on
validation users only. Every function takes ``probs`` and ``labels`` of shape ``[N]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_calibration_error

# probabilities are clamped this far from 0 and 1 before a logit or a log: a point estimate
# of exactly 0 or 1 would otherwise cost an infinite NLL and fix no temperature
EPSILON = 1e-6


def expected_calibration_error(probs: Tensor, labels: Tensor, num_bins: int = 10) -> float:
    """ECE over ``num_bins`` equal-width bins (bin ``i`` holds ``i/n <= p < (i+1)/n``)."""
    if len(probs) == 0:
        return float("nan")
    return float(binary_calibration_error(probs.double(), labels.long(), n_bins=num_bins))


def brier_score(probs: Tensor, labels: Tensor) -> float:
    """Mean of ``(p - label)^2``: 0 is perfect, 0.25 is always answering 0.5."""
    return float(((probs.double() - labels.double()) ** 2).mean())


def binary_nll(probs: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood (nats) of the labels under ``probs``."""
    p = probs.double().clamp(EPSILON, 1 - EPSILON)
    y = labels.double()
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def temper(probs: Tensor, temperature: float) -> Tensor:
    """``sigmoid(logit(p) / T)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.sigmoid(torch.logit(probs.double().clamp(EPSILON, 1 - EPSILON)) / temperature)


def fit_temperature(
    probs: Tensor,
    labels: Tensor,
    lowest: float = 0.01,
    highest: float = 100.0,
    iterations: int = 80,
) -> float:
    """The ``T`` in [``lowest``, ``highest``] of least :func:`binary_nll` of ``temper(p, T)``.

    Golden-section search over log T: the NLL is convex in 1/T (a one-weight logistic
    regression on the logits), so it has one minimum along log T too.
    """
    if not 0 < lowest < highest:
        raise ValueError(f"need 0 < lowest < highest, got {lowest} and {highest}")
    if len(probs) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        return binary_nll(temper(probs, math.exp(log_t)), labels)

    ratio = (math.sqrt(5) - 1) / 2
    a, b = math.log(lowest), math.log(highest)
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    loss_c, loss_d = loss(c), loss(d)
    for _ in range(iterations):
        if loss_c <= loss_d:
            b, d, loss_d = d, c, loss_c
            c = b - ratio * (b - a)
            loss_c = loss(c)
        else:
            a, c, loss_c = c, d, loss_d
            d = a + ratio * (b - a)
            loss_d = loss(d)
    return math.exp((a + b) / 2)


def reliability_bins(
    probs: Tensor, labels: Tensor, num_bins: int = 10
) -> tuple[Tensor, Tensor, Tensor]:
    """Per bin (the bins of :func:`expected_calibration_error`, ``p = 1`` in the last):
    mean predicted probability, observed frequency of label 1, and pair count, each
    ``[num_bins]`` (NaN for the means of an empty bin): a reliability diagram's points."""
    p, y = probs.double(), labels.double()
    edges = torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)  # as torchmetrics bins
    index = (torch.bucketize(p, edges, right=True) - 1).clamp(0, num_bins - 1)
    counts = torch.bincount(index, minlength=num_bins).double()
    mean_p = torch.zeros(num_bins, dtype=torch.float64).scatter_add_(0, index, p) / counts
    observed = torch.zeros(num_bins, dtype=torch.float64).scatter_add_(0, index, y) / counts
    return mean_p, observed, counts
