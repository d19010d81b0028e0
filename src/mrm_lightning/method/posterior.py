"""Adaptation as Bayes' rule: a user's softmax weights as a posterior over the base functions.

With softmax mixing, ``softmax(w0)`` can be read as a prior over which base function is the
user's reward. Bradley-Terry makes the user's pairs' likelihood under base function k
``prod_p sigmoid(phi_k(chosen_p) - phi_k(rejected_p))``, so the posterior's logits are

    w_u = w0 + temperature * sum_p log sigmoid(phi_k(chosen_p) - phi_k(rejected_p))

in one closed-form step (temperature 1: exact Bayes; 0: the prior). A few noisy pairs then
pick among the base functions as sharply as the evidence allows, where a few gradient steps on
w move by an amount set by the learning rate whatever the evidence. Differentiable in the base
functions, so MAML meta-trains them through it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def posterior_weights(
    w0: Tensor, chosen: Tensor, rejected: Tensor | None, mask: Tensor, temperature: float
) -> Tensor:
    """``[B, K]`` posterior logits of each user's base function given its support pairs.

    Args:
        w0: ``[K]`` prior logits (meta-learned).
        chosen: ``[B, P, K]`` base rewards of the chosen responses, or of the pairs'
            chosen-minus-rejected differences where ``rejected`` is None.
        rejected: ``[B, P, K]`` base rewards of the rejected responses, or None.
        mask: ``[B, P]`` 1 for a real support pair, 0 for padding.
        temperature: how strongly the evidence counts (1: Bayes' rule).
    """
    margins = chosen if rejected is None else chosen - rejected  # [B, P, K]
    evidence = (F.logsigmoid(margins) * mask.unsqueeze(-1).to(margins.dtype)).sum(1)
    return w0 + temperature * evidence
