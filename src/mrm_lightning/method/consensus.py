"""What other people's judgements say about a user's pairs: per-rater win rates, the
leave-one-out consensus of the other raters, and a consensus weighted by how much each other
rater agrees with the user.

Pairs are ``(user, first, second)`` with ``first`` the item the user preferred; items are
indices ``[0, T)`` into one table of distinct texts, so "the same item" is the same index.

A rater's score of an item is its *win rate* in that rater's pairs (wins / pairs it is in):
for per-user ratings, a rater's pairs are every two of its items with different scores, so the
win rate orders the rater's items as the scores do; for pairs data it is the rater's own vote on
the item. The consensus of an item is the mean of the other raters' win rates (each rater counts
once, however many pairs it judged). Every function is a few tensor operations on dense
``[U, T]`` tables (users by items).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rater_scores(
    user: Tensor, first: Tensor, second: Tensor, num_users: int, num_items: int
) -> tuple[Tensor, Tensor]:
    """``[U, T]`` win rate of every item in every rater's pairs (0 where unrated) and ``[U, T]``
    bool: which items each rater judged. ``first`` won each pair."""
    cells = num_users * num_items
    wins = torch.zeros(cells, dtype=torch.float64).index_add_(
        0, user * num_items + first, torch.ones(len(user), dtype=torch.float64)
    )
    seen = wins.clone().index_add_(
        0, user * num_items + second, torch.ones(len(user), dtype=torch.float64)
    )
    rated = seen > 0
    scores = torch.where(rated, wins / seen.clamp_min(1), torch.zeros_like(wins))
    return scores.view(num_users, num_items), rated.view(num_users, num_items)


def consensus_margin(
    scores: Tensor,
    rated: Tensor,
    user: Tensor,
    first: Tensor,
    second: Tensor,
    raters: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Leave-one-out consensus on each pair: the mean score of ``first`` over the OTHER raters
    who judged it, minus the same for ``second``; ``[P]`` margins (> 0: the consensus agrees
    with the user) and ``[P]`` bool ``covered`` (both items have another rater; 0 elsewhere).

    ``raters`` (``[U]`` bool) restricts whose judgements count (a group); None: everybody.
    """
    weight = torch.ones(len(scores), dtype=torch.float64) if raters is None else raters.double()
    total = weight @ scores  # [T] sum of the counted raters' scores
    count = weight @ rated.double()  # [T] how many counted raters judged the item
    own = weight[user]  # [P] does the pair's own user count among the raters?

    def others_mean(item: Tensor) -> tuple[Tensor, Tensor]:
        n = count[item] - own * rated[user, item].double()
        s = total[item] - own * scores[user, item]
        return s / n.clamp_min(1), n > 0

    mean_first, has_first = others_mean(first)
    mean_second, has_second = others_mean(second)
    covered = has_first & has_second
    margin = torch.where(covered, mean_first - mean_second, torch.zeros_like(mean_first))
    return margin, covered


def pair_credit(margin: Tensor, decided: Tensor | None = None) -> Tensor:
    """``[P]`` credit of a predictor's margin: 1 right (> 0), 0 wrong (< 0), one half for a tie
    or an undecided pair (``decided`` false: e.g. an item nobody else judged)."""
    credit = torch.where(margin > 0, 1.0, torch.where(margin < 0, 0.0, 0.5)).double()
    return credit if decided is None else torch.where(decided, credit, 0.5)


def per_user_mean(values: Tensor, user: Tensor, num_users: int) -> tuple[Tensor, Tensor]:
    """``[U]`` mean of ``values`` over each user's entries (NaN for none) and ``[U]`` counts."""
    count = torch.zeros(num_users, dtype=torch.float64).index_add_(
        0, user, torch.ones(len(user), dtype=torch.float64)
    )
    total = torch.zeros(num_users, dtype=torch.float64).index_add_(0, user, values.double())
    return total / count, count


def judged_by_others(rated: Tensor, user: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """``[P]`` bool: some user other than the pair's own judged both of its items."""
    both = rated[:, first] & rated[:, second]  # [U, P]
    both[user, torch.arange(len(user))] = False
    return both.any(0)


def pair_votes(
    scores: Tensor, rated: Tensor, user: Tensor, first: Tensor, second: Tensor
) -> Tensor:
    """``[U, P]`` every rater's vote on every pair: +1 where the rater scored ``first`` above
    ``second``, -1 below, 0 for a tie, for a rater who did not judge both items, and for the
    pair's own user."""
    both = rated[:, first] & rated[:, second]  # [U, P]
    votes = torch.sign(scores[:, first] - scores[:, second]) * both
    votes[user, torch.arange(len(user))] = 0.0
    return votes


def agreement_weights(
    scores: Tensor,
    rated: Tensor,
    user: Tensor,
    first: Tensor,
    second: Tensor,
    shrink: float = 1.0,
) -> Tensor:
    """``[U, U]``: row u, how far each other rater agrees with u on u's pairs given here,
    ``(agreements - disagreements) / (votes + shrink)`` in (-1, 1); 0 for no common pair and
    on the diagonal. A rater of the opposite taste gets a negative weight."""
    votes = pair_votes(scores, rated, user, first, second)  # [U, P]
    num_users = len(scores)
    agree = torch.zeros(num_users, num_users, dtype=torch.float64).index_add_(0, user, votes.T)
    voted = torch.zeros(num_users, num_users, dtype=torch.float64).index_add_(
        0, user, votes.abs().T
    )
    weights = agree / (voted + shrink)
    weights.fill_diagonal_(0.0)
    return weights


def neighbour_margin(
    weights: Tensor, scores: Tensor, rated: Tensor, user: Tensor, first: Tensor, second: Tensor
) -> Tensor:
    """``[P]`` the other raters' votes on each pair, each weighted by its agreement with the
    pair's user (:func:`agreement_weights`): > 0 where the raters who judge like the user
    preferred ``first``; 0 where no rater with a weight judged both items."""
    votes = pair_votes(scores, rated, user, first, second)  # [U, P]
    return (weights[user] * votes.T).sum(1)
