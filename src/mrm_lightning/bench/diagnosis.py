"""``mrm diagnose``: is personalization warranted on this data? Measured before any training,
on the training split only (:mod:`.diagnosis_data`).

- The data: users, pairs per user, items judged by several users.
- The consensus ceiling: how often the leave-one-out consensus of the OTHER users orders a
  user's held-out pairs correctly, i.e. the best any single shared reward model could do with
  perfect text understanding. Pairs where an item has no other rater, and ties, count one half
  and are reported apart (coverage): where few items are shared, the ceiling is soft.
- The same per group of users (a users file's column): does a group's consensus beat everyone's?
- The global model on this encoder, scored on the same held-out pairs: its distance to the
  ceiling is the room a better encoder can still win.
- Disagreement beyond noise: a user's own judgements against the shared predictor, with a
  permutation test (:mod:`.disagreement`); and the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..method.bradley_terry import fit_bradley_terry_linear
from ..method.consensus import (
    consensus_margin,
    judged_by_others,
    pair_credit,
    per_user_mean,
    rater_scores,
)
from ..method.subspace import leading_directions
from ..peers.per_group import read_groups
from .diagnosis_data import TrainingPairs, describe, items_are_shared, shuffled, training_pairs
from .disagreement import TESTS, SharedModel, TestSettings, disagreement_test, scored_users

#: below this share of held-out pairs with another rater on each item, the consensus ceiling
#: is too soft to stand for the best shared model
MIN_COVERAGE = 0.5
#: the items statistic compares raters on the same pairs of items: below this share of pairs
#: that another user also judged (both items), it has too little to go on, and ``auto`` tests
#: through per-user models instead
MIN_PAIRS_JUDGED_BY_OTHERS = 0.5


@dataclass
class DiagnoseSettings:
    """Args:
    holdout: share of the training split's units held out (seeded, the same for everybody).
    test: ``items``, ``model`` or ``auto`` (items where several users judged the same items).
    shuffle_users: ``pairs`` / ``units`` shuffle user ids first (a check: expect no evidence).
    groups: a users CSV (e.g. ../shared/data/sbic/annotators.csv), for per-group ceilings.
    group_by: its column naming each user's group.
    user_column: its column of user ids.
    alpha: the verdict says "users differ" when p < alpha.
    seed: seeds the held-out cut, the shuffle and the permutations.
    """

    holdout: float = 0.5
    test: str = "auto"
    shuffle_users: str = "none"
    groups: str | None = None
    group_by: str | None = None
    user_column: str = "user_id"
    alpha: float = 0.05
    seed: int = 0
    test_settings: TestSettings = field(default_factory=TestSettings)


def ceiling(pairs: TrainingPairs, scores, rated, raters=None, users=None) -> dict:
    """The leave-one-out consensus (of ``raters``, None: everybody) on the held-out pairs of
    ``users`` (``[U]`` bool, None: everybody), of those with fit pairs too (every figure is on
    the same users as the test's): user-level accuracy, ties and uncovered pairs
    counting one half, and the shares of pairs covered and tied."""
    users = scored_users(pairs) if users is None else users & scored_users(pairs)
    held = pairs.held_out & users[pairs.user]
    user, first, second = pairs.user[held], pairs.first[held], pairs.second[held]
    margin, covered = consensus_margin(scores, rated, user, first, second, raters)
    credit = pair_credit(margin, covered)
    by_user, count = per_user_mean(credit, user, pairs.num_users)
    decided = covered & (margin != 0)
    return {
        "ceiling": float(by_user[count > 0].mean()) if held.any() else math.nan,
        "coverage": float(covered.double().mean()) if held.any() else math.nan,
        "ties": float((covered & (margin == 0)).double().mean()) if held.any() else math.nan,
        "accuracy_where_decided": float((margin[decided] > 0).double().mean())
        if decided.any()
        else math.nan,
        "users": int((count > 0).sum()),
        "pairs": int(held.sum()),
    }


def held_out_accuracy(pairs: TrainingPairs, margin) -> float:
    """User-level accuracy of margins on the held-out pairs of the users with fit pairs too
    (a tie counts one half)."""
    held = pairs.held_out & scored_users(pairs)[pairs.user]
    by_user, count = per_user_mean(pair_credit(margin[held]), pairs.user[held], pairs.num_users)
    return float(by_user[count > 0].mean())


def global_model(pairs: TrainingPairs, rank: int) -> tuple[SharedModel, float, float]:
    """One linear Bradley-Terry model on everybody's fit pairs (L2 chosen on the held-out
    pairs, which can only flatter it); its margins, the users' correction features (the pairs'
    differences on the ``rank`` leading directions of the fit differences, unit RMS each), its
    held-out accuracy and L2."""
    x, fit = pairs.differences, ~pairs.held_out
    best = None
    for l2 in (0.0, 1e-4, 1e-3, 1e-2, 1e-1):
        weights = fit_bradley_terry_linear(x[fit], l2)
        accuracy = held_out_accuracy(pairs, x @ weights)
        if best is None or accuracy > best[0]:
            best = (accuracy, l2, weights)
    accuracy, l2, weights = best
    directions = leading_directions(x[fit].double().T @ x[fit].double(), min(rank, x.shape[1]))
    features = x.double() @ directions  # [P, r]
    features = features / features[fit].square().mean(0).sqrt().clamp_min(1e-12)
    return SharedModel((x @ weights).double(), features), accuracy, l2


def group_ceilings(pairs: TrainingPairs, scores, rated, settings: DiagnoseSettings) -> dict:
    """Per group with two or more users: its users' held-out pairs ordered by the consensus of
    the group's other members and by everyone else's; both as ceilings (uncovered pairs count
    one half, so they reward coverage) and on the pairs both cover (the fair comparison)."""
    group_of = read_groups(settings.groups, settings.user_column, settings.group_by)
    names = [group_of.get(name) for name in pairs.user_names]
    result, pooled = {}, {"pairs": 0, "group": 0.0, "everyone": 0.0}
    for group in sorted({g for g in names if g is not None}):
        members = torch.tensor([g == group for g in names])
        if int(members.sum()) < 2:
            continue
        own, everyone = (
            ceiling(pairs, scores, rated, raters, members) for raters in (members, None)
        )
        held = pairs.held_out & (members & scored_users(pairs))[pairs.user]
        side = (pairs.user[held], pairs.first[held], pairs.second[held])
        group_margin, group_covered = consensus_margin(scores, rated, *side, members)
        everyone_margin, everyone_covered = consensus_margin(scores, rated, *side)
        both = group_covered & everyone_covered
        group_credit = float(pair_credit(group_margin[both]).sum())
        everyone_credit = float(pair_credit(everyone_margin[both]).sum())
        count = int(both.sum())
        result[group] = {
            "users": int(members.sum()),
            "group_ceiling": own["ceiling"],
            "group_coverage": own["coverage"],
            "everyone_ceiling": everyone["ceiling"],
            "everyone_coverage": everyone["coverage"],
            "pairs_both_cover": count,
            "group_where_both_cover": group_credit / count if count else math.nan,
            "everyone_where_both_cover": everyone_credit / count if count else math.nan,
        }
        pooled["pairs"] += count
        pooled["group"] += group_credit
        pooled["everyone"] += everyone_credit
    if pooled["pairs"]:
        pooled["group"] /= pooled["pairs"]
        pooled["everyone"] /= pooled["pairs"]
    with_group = sum(g is not None for g in names)
    return {
        "group_by": settings.group_by,
        "users_with_a_group": with_group,
        "groups": result,
        "where_both_cover": pooled,
    }


def diagnose(datamodule, settings: DiagnoseSettings) -> dict:
    """Every figure of the diagnosis of a set-up data module (module docstring), as a dict."""
    if settings.test not in TESTS:
        raise ValueError(f"--test must be one of {', '.join(TESTS)}, got {settings.test!r}")
    if min(settings.test_settings.ranks, default=0) < 1:
        raise ValueError(f"--ranks must be >= 1, got {settings.test_settings.ranks}")
    pairs = training_pairs(datamodule, settings.holdout, settings.seed)
    pairs = shuffled(pairs, settings.shuffle_users, settings.seed)
    figures = {"data": describe(pairs), "shuffle_users": settings.shuffle_users}
    scores, rated = rater_scores(
        pairs.user, pairs.first, pairs.second, pairs.num_users, pairs.num_items
    )
    figures["consensus"] = ceiling(pairs, scores, rated)
    by_others = judged_by_others(rated, pairs.user, pairs.first, pairs.second)
    figures["data"]["pairs_another_user_judged"] = float(by_others.double().mean())
    shared, accuracy, l2 = global_model(pairs, max(settings.test_settings.ranks))
    figures["global_model"] = {"accuracy": accuracy, "l2": l2}
    if pairs.oracle_margin is not None:
        figures["oracle_accuracy"] = held_out_accuracy(pairs, pairs.oracle_margin)
    if settings.groups:
        if not settings.group_by:
            raise ValueError("--groups needs --group-by (the column naming each user's group)")
        figures["groups"] = group_ceilings(pairs, scores, rated, settings)
    shared_pairs = float(by_others.double().mean()) >= MIN_PAIRS_JUDGED_BY_OTHERS
    kind = settings.test if settings.test != "auto" else ("items" if shared_pairs else "model")
    within_units = items_are_shared(pairs) >= 0.5
    test = disagreement_test(pairs, kind, within_units, shared, settings.test_settings)
    figures["disagreement"] = test
    figures["verdict"] = verdict(figures, settings.alpha)
    return figures


def verdict(figures: dict, alpha: float) -> dict:
    """The verdict line and the headroom figures it rests on."""
    consensus, glob = figures["consensus"], figures["global_model"]["accuracy"]
    measured = consensus["coverage"] >= MIN_COVERAGE
    # the best shared predictor measured here: the consensus where it is measured (unless the
    # global model on this encoder does better: a consensus of a few raters is noisy), else the
    # global model (a lower bound of the ceiling)
    shared_best = max(consensus["ceiling"], glob) if measured else glob
    # what no shared predictor gets right: at most everything it misses, or where the true
    # rewards are known, the distance to them (label noise is beyond anybody's reach)
    ceiling_for_anyone = figures.get("oracle_accuracy", 1.0)
    p = figures["disagreement"]["p_value"]
    headroom = 100 * (ceiling_for_anyone - shared_best)
    shared_best_is = (
        "consensus ceiling" if measured and consensus["ceiling"] >= glob else "global model"
    )
    top = f"oracle {ceiling_for_anyone:.3f}" if "oracle_accuracy" in figures else "1.0"
    test = figures["disagreement"]
    gain = f"own judgements {100 * test['own_minus_shared']:+.1f} points over the {test['shared']}"
    differ = p < alpha
    if differ:
        line = (
            f"users differ beyond noise (p = {p:.3g}; {gain}): personalization can help by up "
            f"to {headroom:.0f} points ({top} - {shared_best_is} {shared_best:.3f})"
        )
    else:
        line = f"no evidence that users differ (p = {p:.2g}): expect MRM = global"
    return {
        "users_differ": differ,
        "alpha": alpha,
        "line": line,
        "shared_best": shared_best,
        "shared_best_is": shared_best_is,
        "headroom_points": headroom,
        "headroom_to": "oracle" if "oracle_accuracy" in figures else "every pair right",
        "encoder_room_points": 100 * (consensus["ceiling"] - glob) if measured else None,
    }
