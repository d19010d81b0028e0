"""Win rates, the leave-one-out consensus and agreement-weighted votes, worked by hand."""

import torch

from mrm_lightning.method.consensus import (
    agreement_weights,
    consensus_margin,
    judged_by_others,
    neighbour_margin,
    pair_credit,
    per_user_mean,
    rater_scores,
)

T = torch.tensor

# three raters, items 0..3; (user, preferred, other):
#   rater 0: 0>1, 0>2, 1>2        win rates: item0 1, item1 1/2, item2 0
#   rater 1: 1>0, 2>3             win rates: item0 0, item1 1, item2 1, item3 0
#   rater 2: 0>1                  win rates: item0 1, item1 0
USER, FIRST, SECOND = T([0, 0, 0, 1, 1, 2]), T([0, 0, 1, 1, 2, 0]), T([1, 2, 2, 0, 3, 1])


def test_rater_scores_are_win_rates():
    scores, rated = rater_scores(USER, FIRST, SECOND, num_users=3, num_items=4)
    assert scores.tolist() == [[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    assert rated.tolist() == [
        [True, True, True, False],
        [True, True, True, True],
        [True, True, False, False],
    ]


def test_consensus_leaves_the_user_out():
    scores, rated = rater_scores(USER, FIRST, SECOND, 3, 4)
    # rater 0's pair 0 > 1: others on item 0: (0 + 1) / 2 = 0.5; item 1: (1 + 0) / 2 = 0.5: a tie
    # rater 0's pair 1 > 2: item 1 0.5 (as above); item 2: rater 1 only, 1: margin -0.5 (wrong)
    # rater 1's pair 2 > 3: item 2: rater 0, 0; item 3: nobody else: uncovered
    # rater 2's pair 0 > 1: item 0: (1 + 0) / 2; item 1: (0.5 + 1) / 2: margin -0.25
    margin, covered = consensus_margin(
        scores, rated, T([0, 0, 1, 2]), T([0, 1, 2, 0]), T([1, 2, 3, 1])
    )
    assert margin.tolist() == [0.0, -0.5, 0.0, -0.25]
    assert covered.tolist() == [True, True, False, True]
    assert pair_credit(margin, covered).tolist() == [0.5, 0.0, 0.5, 0.0]


def test_consensus_of_a_group_counts_only_its_raters():
    scores, rated = rater_scores(USER, FIRST, SECOND, 3, 4)
    group = T([True, False, True])  # raters 0 and 2
    # rater 0's pair 0 > 1 judged by rater 2 alone: item 0 1, item 1 0: right
    # rater 1 (not in the group) judged by both: item 0 (1 + 1) / 2, item 1 (0.5 + 0) / 2
    margin, covered = consensus_margin(scores, rated, T([0, 1]), T([0, 0]), T([1, 1]), group)
    assert margin.tolist() == [1.0, 0.75] and covered.tolist() == [True, True]


def test_pair_credit_and_per_user_mean():
    credit = pair_credit(T([2.0, -1.0, 0.0, 3.0]), T([True, True, True, False]))
    assert credit.tolist() == [1.0, 0.0, 0.5, 0.5]
    means, counts = per_user_mean(credit, T([0, 0, 1, 1]), 3)
    assert means[:2].tolist() == [0.5, 0.5] and torch.isnan(means[2])
    assert counts.tolist() == [2.0, 2.0, 0.0]


def test_agreement_weights_and_weighted_votes():
    # items 0..3; raters 0 and 1 agree (0>1, 2>3), rater 2 is opposed (1>0, 3>2)
    user, first, second = T([0, 0, 1, 1, 2, 2]), T([0, 2, 0, 2, 1, 3]), T([1, 3, 1, 3, 0, 2])
    scores, rated = rater_scores(user, first, second, 3, 4)
    # weights from the pair 0 > 1 only (each user's first pair): votes +1 agree, -1 disagree
    fit = T([0, 2, 4])
    weights = agreement_weights(scores, rated, user[fit], first[fit], second[fit], shrink=1.0)
    # row 0: rater 1 agrees (+1 / (1 + 1)), rater 2 disagrees (-1 / 2); diagonal 0
    assert weights.tolist() == [[0.0, 0.5, -0.5], [0.5, 0.0, -0.5], [-0.5, -0.5, 0.0]]
    held = T([1, 3, 5])  # the pairs on items 2 and 3
    margin = neighbour_margin(weights, scores, rated, user[held], first[held], second[held])
    # user 0 on 2 > 3: rater 1 votes +1 (x 0.5), rater 2 votes -1 (x -0.5): +1
    # user 2 on 3 > 2: raters 0 and 1 vote -1 each (x -0.5): +1
    assert margin.tolist() == [1.0, 1.0, 1.0]
    assert judged_by_others(rated, user, first, second).all()
    assert not judged_by_others(rated[:1], user[:2], first[:2], second[:2]).any()
