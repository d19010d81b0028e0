"""How sure the model is about a user: the posterior over their weights, and what follows.

Two posteriors, one per adaptation mode:

- **Laplace** (gradient-step adaptation, linear or softmax mixing): a Gaussian at the adapted
  weights ``w`` with precision ``H = prior_precision * I + sum_p s_p (1 - s_p) g_p g_p^T``, where
  ``s_p = sigmoid(m_p)`` is the pair's win probability, ``m_p = c(w) . d_p`` its margin,
  ``d_p = phi(chosen_p) - phi(rejected_p)`` and ``g_p = dm_p/dw = J_c(w)^T d_p`` (``J_c`` the
  Jacobian of the mixing: the identity for linear, ``diag(c) - c c^T`` for softmax). This is the
  generalised Gauss-Newton Hessian of the Bradley-Terry loss (exact for linear mixing), always
  positive definite. A reward ``r(x) = c(w) . phi(x)`` is linearised in ``w``: its variance is
  ``g_x^T H^-1 g_x``.
- **Categorical** (posterior adaptation, softmax mixing): the weights already are Bayes' rule
  over which base function is the user's, ``q = softmax(w)``. Nothing is approximated: the
  reward is ``phi_k(x)`` with probability ``q_k``.

Preference probabilities integrated over the posterior, and the expected information gain of
asking a pair (BALD: ``H[E p] - E[H p]``, the mutual information of the answer and the
weights), follow from those; with the Laplace posterior the margin is Gaussian, and the
expectations over it are one-dimensional quadratures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .heads import Combination, mixing

# E[f(Z)], Z ~ N(0, 1), by the trapezoid rule on z in [-8, 8], step 1/16: for the sigmoid and
# entropy terms below accurate to ~1e-9 while the margin's sd is under ~10 (the integrand's
# complex poles lie pi/sd from the real line, far wider than the step); Gauss-Hermite with as
# many nodes errs by 1e-4 at sd 5
_NODES_T = torch.linspace(-8.0, 8.0, 257, dtype=torch.float64)
_WEIGHTS_T = torch.exp(-0.5 * _NODES_T**2) / math.sqrt(2 * math.pi) / 16
_WEIGHTS_T[[0, -1]] /= 2


def mixing_jacobian(weights: Tensor, combination: Combination) -> Tensor:
    """``[B, K, K]`` d c(w) / d w: the identity (linear) or ``diag(c) - c c^T`` (softmax)."""
    batch, k = weights.shape
    if combination == "linear":
        return torch.eye(k, dtype=weights.dtype, device=weights.device).expand(batch, k, k).clone()
    c = mixing(weights, combination)
    return torch.diag_embed(c) - c.unsqueeze(-1) * c.unsqueeze(-2)


def weight_gradients(weights: Tensor, base: Tensor, combination: Combination) -> Tensor:
    """``[B, P, K]`` d r / d w of rewards ``r = c(w) . base`` for ``base`` ``[B, P, K]``."""
    jacobian = mixing_jacobian(weights, combination)  # [B, K(c), K(w)]
    return base @ jacobian  # g = J^T base, as rows


def laplace_precision(
    weights: Tensor,
    differences: Tensor,
    mask: Tensor,
    combination: Combination,
    prior_precision: float,
) -> Tensor:
    """``[B, K, K]`` posterior precision at each user's adapted weights.

    Args:
        weights: ``[B, K]`` the adapted weights.
        differences: ``[B, P, K]`` base rewards of chosen minus rejected, per support pair.
        mask: ``[B, P]`` True for a real pair, False for padding.
        combination: the model's mixing.
        prior_precision: the Gaussian prior's precision (around the meta-learned w0).
    """
    if prior_precision <= 0:
        raise ValueError(f"prior_precision must be > 0, got {prior_precision}")
    gradients = weight_gradients(weights, differences, combination)  # [B, P, K]
    margins = (differences * mixing(weights, combination).unsqueeze(1)).sum(-1)
    curvature = torch.sigmoid(margins) * torch.sigmoid(-margins) * mask.to(margins.dtype)
    fisher = (gradients * curvature.unsqueeze(-1)).transpose(1, 2) @ gradients
    k = weights.shape[-1]
    return fisher + prior_precision * torch.eye(k, dtype=weights.dtype, device=weights.device)


def linearised_moments(
    weights: Tensor, covariance: Tensor, base: Tensor, combination: Combination
) -> tuple[Tensor, Tensor]:
    """Mean and variance ``[B, P]`` of ``c(w) . base`` under ``N(weights, covariance)``,
    linearised at ``weights`` (``base`` ``[B, P, K]``: responses, or pair differences)."""
    mean = (base * mixing(weights, combination).unsqueeze(1)).sum(-1)
    gradients = weight_gradients(weights, base, combination)
    variance = ((gradients @ covariance) * gradients).sum(-1).clamp_min(0.0)
    return mean, variance


def categorical_moments(weights: Tensor, base: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance ``[B, P]`` of ``phi_k`` with ``k ~ softmax(weights)`` (exact)."""
    q = torch.softmax(weights, dim=-1).unsqueeze(1)
    mean = (base * q).sum(-1)
    variance = (((base - mean.unsqueeze(-1)) ** 2) * q).sum(-1)
    return mean, variance


def gaussian_expectation(mean: Tensor, variance: Tensor, f) -> Tensor:
    """``E[f(m)]`` for ``m ~ N(mean, variance)``, elementwise, by quadrature."""
    nodes = _NODES_T.to(mean.device, torch.float64)
    weights = _WEIGHTS_T.to(mean.device, torch.float64)
    points = mean.double().unsqueeze(-1) + variance.double().sqrt().unsqueeze(-1) * nodes
    return (f(points) * weights).sum(-1).to(mean.dtype)


def gaussian_win_probability(mean: Tensor, variance: Tensor) -> Tensor:
    """``E[sigmoid(m)]``, ``m ~ N(mean, variance)``: the probability that the first response
    wins, integrated over the posterior."""
    return gaussian_expectation(mean, variance, torch.sigmoid)


def categorical_win_probability(weights: Tensor, differences: Tensor) -> Tensor:
    """``sum_k q_k sigmoid(d_k)``, ``q = softmax(weights)`` (exact), ``[B, P]``."""
    q = torch.softmax(weights, dim=-1).unsqueeze(1)
    return (torch.sigmoid(differences) * q).sum(-1)


def bernoulli_entropy(p: Tensor) -> Tensor:
    """Entropy in nats of a Bernoulli(p), 0 at p in {0, 1}."""
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def _entropy_of_logit(m: Tensor) -> Tensor:
    # H(sigmoid(m)) without overflow: -p log p - (1-p) log(1-p) with log p = logsigmoid(m)
    p = torch.sigmoid(m)
    return -(p * F.logsigmoid(m) + (1 - p) * F.logsigmoid(-m))


def gaussian_information_gain(mean: Tensor, variance: Tensor) -> Tensor:
    """Expected information (nats) the answer to a pair gives about the weights, for a
    Gaussian margin: ``H[E sigmoid(m)] - E[H[sigmoid(m)]]``."""
    expected = bernoulli_entropy(gaussian_win_probability(mean, variance))
    return (expected - gaussian_expectation(mean, variance, _entropy_of_logit)).clamp_min(0.0)


def categorical_information_gain(weights: Tensor, differences: Tensor) -> Tensor:
    """The same for the categorical posterior (exact), ``[B, P]``."""
    q = torch.softmax(weights, dim=-1).unsqueeze(1)
    expected = bernoulli_entropy((torch.sigmoid(differences) * q).sum(-1))
    return (expected - (_entropy_of_logit(differences) * q).sum(-1)).clamp_min(0.0)


def answered_precision(
    weights: Tensor, precision: Tensor, difference: Tensor, combination: Combination
) -> Tensor:
    """``[B, K, K]`` the precision after one more pair ``difference`` ``[B, K]`` is answered:
    a Gauss-Newton term that does not depend on the answer (used to pick a batch of pairs
    that are informative together, not k copies of the best one)."""
    gradient = weight_gradients(weights, difference.unsqueeze(1), combination)[:, 0]  # [B, K]
    margin = (difference * mixing(weights, combination)).sum(-1)
    curvature = torch.sigmoid(margin) * torch.sigmoid(-margin)
    outer = gradient.unsqueeze(-1) * gradient.unsqueeze(-2)
    return precision + curvature[:, None, None] * outer


# ----------------------------------------------------------------- packed pairs (training)
def packed_laplace_precision(
    weights: Tensor,
    differences: Tensor,
    owner: Tensor,
    combination: Combination,
    prior_precision: float,
) -> Tensor:
    """:func:`laplace_precision` of packed support pairs: ``[M, K]`` differences and ``[M]``
    their users' rows -> ``[B, K, K]`` (the test step's layout: no padding)."""
    precision = laplace_precision(
        weights.index_select(0, owner), differences.unsqueeze(1),
        torch.ones(len(owner), 1, dtype=torch.bool, device=owner.device), combination, 1.0,
    )  # fmt: skip
    eye = torch.eye(weights.shape[-1], dtype=precision.dtype, device=precision.device)
    fisher = precision - eye  # each pair's own term, without the per-pair prior added above
    total = torch.zeros(len(weights), *eye.shape, dtype=precision.dtype, device=precision.device)
    return total.index_add_(0, owner, fisher) + prior_precision * eye


def packed_win_probability(
    weights: Tensor,
    covariance: Tensor | None,
    differences: Tensor,
    owner: Tensor,
    combination: Combination,
) -> Tensor:
    """``[M]`` each packed pair's probability that its chosen response wins, integrated over
    its user's posterior: Gaussian (``covariance`` ``[B, K, K]``) or categorical (None)."""
    rows = weights.index_select(0, owner)
    if covariance is None:
        return categorical_win_probability(rows, differences.unsqueeze(1))[:, 0]
    mean, variance = linearised_moments(
        rows, covariance.index_select(0, owner), differences.unsqueeze(1), combination
    )
    return gaussian_win_probability(mean[:, 0], variance[:, 0])
