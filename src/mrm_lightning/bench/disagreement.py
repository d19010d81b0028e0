"""Do users differ beyond noise? A user's own training judgements against a shared predictor,
on the user's held-out pairs, with a permutation test.

Two statistics, each the mean over users of (own accuracy - shared accuracy) on held-out pairs:

- ``items`` (several users judged the same items): the shared predictor is the leave-one-out
  consensus of the other raters; the user's own predictor weights each other rater's vote by how
  often that rater agreed with the user on the user's fit pairs (a rater of the opposite taste
  counts against), falling back to the consensus where no weighted rater judged both items.
- ``model`` (items not shared: pairs data, the synthetic population): the shared predictor is a
  global Bradley-Terry model fitted on everybody's fit pairs (the user's included: if anything,
  this favours it); the user's own predictor adds the user's own correction, fitted on the
  user's fit pairs alone (:mod:`mrm_lightning.method.user_offsets`).

Under the null hypothesis, users are exchangeable: who judged a pair carries no information. The
statistic is recomputed with the user labels permuted (across all pairs, or within units where
several users judged the same items, so that which items were judged together is kept), and
p = (1 + #{permuted >= observed}) / (1 + permutations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..method.consensus import (
    agreement_weights,
    consensus_margin,
    neighbour_margin,
    pair_credit,
    per_user_mean,
    rater_scores,
)
from ..method.significance import (
    permutation_p_value,
    shuffle_users,
    shuffle_users_within_units,
)
from ..method.user_offsets import fit_user_offsets
from .diagnosis_data import TrainingPairs

TESTS = ("auto", "items", "model")


@dataclass
class SharedModel:
    """What the ``model`` statistic needs: the global model's margin on every pair and each
    pair's features for the users' own corrections (both ``[P]`` / ``[P, r]``)."""

    margin: Tensor
    features: Tensor


@dataclass
class Gaps:
    """Per user ``[U]``: own and shared accuracy on held-out pairs (NaN: user not scored)."""

    own: Tensor
    shared: Tensor

    @property
    def gap(self) -> Tensor:
        return self.own - self.shared

    @property
    def statistic(self) -> float:
        gap = self.gap
        scored = ~torch.isnan(gap)
        return float(gap[scored].mean()) if scored.any() else 0.0


def scored_users(pairs: TrainingPairs) -> Tensor:
    """``[U]`` bool: users with both fit and held-out pairs."""
    count = lambda mask: torch.bincount(pairs.user[mask], minlength=pairs.num_users)  # noqa: E731
    return (count(~pairs.held_out) > 0) & (count(pairs.held_out) > 0)


def _accuracies(pairs: TrainingPairs, own: Tensor, shared: Tensor) -> Gaps:
    held = pairs.held_out
    own_acc, _ = per_user_mean(own, pairs.user[held], pairs.num_users)
    shared_acc, _ = per_user_mean(shared, pairs.user[held], pairs.num_users)
    keep = scored_users(pairs)
    nan = torch.full_like(own_acc, math.nan)
    return Gaps(torch.where(keep, own_acc, nan), torch.where(keep, shared_acc, nan))


def model_gaps(pairs: TrainingPairs, shared: SharedModel, rank: int, l2: float) -> Gaps:
    """The ``model`` statistic's per-user accuracies (module docstring), the users' own
    corrections on the first ``rank`` features with L2 strength ``l2``."""
    fit, held = ~pairs.held_out, pairs.held_out
    features = shared.features[:, :rank]
    delta = fit_user_offsets(
        features[fit], shared.margin[fit], pairs.user[fit], pairs.num_users, l2
    )  # [U, r]
    user = pairs.user[held]
    own = shared.margin[held] + (features[held].double() * delta[user]).sum(1)
    return _accuracies(pairs, pair_credit(own), pair_credit(shared.margin[held]))


def items_gaps(pairs: TrainingPairs, shrink: float = 1.0) -> Gaps:
    """The ``items`` statistic's per-user accuracies (module docstring)."""
    scores, rated = rater_scores(
        pairs.user, pairs.first, pairs.second, pairs.num_users, pairs.num_items
    )
    fit, held = ~pairs.held_out, pairs.held_out
    side = lambda mask: (pairs.user[mask], pairs.first[mask], pairs.second[mask])  # noqa: E731
    weights = agreement_weights(scores, rated, *side(fit), shrink=shrink)
    consensus, covered = consensus_margin(scores, rated, *side(held))
    personal = neighbour_margin(weights, scores, rated, *side(held))
    own = torch.where(personal != 0, pair_credit(personal), pair_credit(consensus, covered))
    return _accuracies(pairs, own, pair_credit(consensus, covered))


@dataclass
class TestSettings:
    """Args:
    permutations: user-label permutations for the p-value (at least 200 for p < 0.005).
    seed: seeds the permutations.
    ranks: how many leading directions of the pair differences a user's own correction may
        use (``model``): few fit a sharp taste from few pairs, more fit richer ones.
    l2_grid: L2 strengths of the users' own corrections (``model``). The statistic is the
        best over every rank and L2, recomputed the same way under every permutation, so the
        choice costs the test nothing in validity.
    shrink: agreement weights are (agree - disagree) / (votes + shrink) (``items``).
    """

    permutations: int = 200
    seed: int = 0
    ranks: tuple[int, ...] = (8, 32)
    # on the synthetic and semi-synthetic data, the best statistic came from L2 0.1 to 1
    # (features have unit RMS); 0.01 overfits the 10-40 pairs a user has, 10 barely moves
    l2_grid: tuple[float, ...] = (0.1, 1.0)
    shrink: float = 1.0


def statistic(pairs: TrainingPairs, kind: str, shared: SharedModel | None, settings) -> tuple:
    """(statistic, per-user Gaps, the (rank, L2) chosen or None) of one labelling of the pairs."""
    if kind == "items":
        gaps = items_gaps(pairs, settings.shrink)
        return gaps.statistic, gaps, None
    best = None
    for rank in sorted({min(r, shared.features.shape[1]) for r in settings.ranks}):
        for l2 in settings.l2_grid:
            gaps = model_gaps(pairs, shared, rank, l2)
            if best is None or gaps.statistic > best[0]:
                best = (gaps.statistic, gaps, (rank, l2))
    return best


def disagreement_test(
    pairs: TrainingPairs,
    kind: str,
    within_units: bool,
    shared: SharedModel | None,
    settings: TestSettings,
) -> dict:
    """The statistic on the data, its permutation null and p-value, and per-user figures."""
    if settings.permutations < 1:
        raise ValueError(f"--permutations must be >= 1, got {settings.permutations}")
    observed, gaps, chosen = statistic(pairs, kind, shared, settings)
    gen = torch.Generator().manual_seed(settings.seed)
    null = []
    for _ in range(settings.permutations):
        if within_units:
            user = shuffle_users_within_units(pairs.user, pairs.unit, gen)
        else:
            user = shuffle_users(pairs.user, gen)
        null.append(statistic(pairs.relabelled(user), kind, shared, settings)[0])
    null_t = torch.tensor(null, dtype=torch.float64)
    gap = gaps.gap
    scored = ~torch.isnan(gap)
    result = {
        "statistic": kind,
        "shared_predictor": "consensus of the other raters" if kind == "items" else "global model",
        "shared": "consensus" if kind == "items" else "global model",
        "own_predictor": "other raters weighted by agreement with the user"
        if kind == "items"
        else "global model plus the user's own correction",
        "permuted": "user ids within units" if within_units else "user ids across pairs",
        "permutations": settings.permutations,
        "users": int(scored.sum()),
        "own_accuracy": float(gaps.own[scored].mean()) if scored.any() else math.nan,
        "shared_accuracy": float(gaps.shared[scored].mean()) if scored.any() else math.nan,
        "own_minus_shared": observed,
        "null_mean": float(null_t.mean()),
        "null_q95": float(null_t.quantile(0.95)),
        "p_value": permutation_p_value(observed, null_t),
        "own_wins": float((gap[scored] > 0).double().mean()) if scored.any() else math.nan,
        "own_loses": float((gap[scored] < 0).double().mean()) if scored.any() else math.nan,
    }
    if chosen is not None:
        result["own_rank"], result["own_l2"] = chosen
    result["per_user_gap"] = gap[scored].tolist()
    result["null"] = null
    return result
