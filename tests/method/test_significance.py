"""Permutation p-values, user shuffles and the sign test, worked by hand."""

import pytest
import torch

from mrm_lightning.method.significance import (
    binomial_tail,
    permutation_p_value,
    shuffle_users,
    shuffle_users_within_units,
    sign_test,
)


def test_permutation_p_value_counts_the_observed_labelling():
    null = torch.tensor([0.1, 0.3, 0.2, 0.5])
    assert permutation_p_value(0.3, null) == (1 + 2) / 5  # 0.3 and 0.5 are >= 0.3
    assert permutation_p_value(9.0, null) == 1 / 5  # never 0
    assert permutation_p_value(-1.0, null) == 1.0


def test_shuffle_users_keeps_each_users_count():
    user = torch.tensor([0, 0, 0, 1, 2, 2])
    shuffled = shuffle_users(user, torch.Generator().manual_seed(0))
    assert sorted(shuffled.tolist()) == sorted(user.tolist())


def test_shuffling_within_units_moves_whole_blocks_between_the_units_users():
    unit = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2])
    user = torch.tensor([0, 0, 1, 2, 1, 1, 3, 4])
    changed = False
    for seed in range(20):
        new = shuffle_users_within_units(user, unit, torch.Generator().manual_seed(seed))
        assert set(new[unit == 0].tolist()) == {0, 1, 2}  # the unit's users, nobody else
        assert set(new[unit == 1].tolist()) == {1, 3}
        assert new[7] == 4  # alone in its unit
        assert new[0] == new[1] and new[4] == new[5]  # a block moves whole
        assert len(set(new[unit == 0][1:].tolist())) == 3  # still one block per user
        changed |= not torch.equal(new, user)
    assert changed


def test_sign_test_by_hand():
    # 9 helped, 1 hurt of 10: P(X <= 1) = (1 + 10) / 1024, two-sided twice that
    assert sign_test(9, 1) == pytest.approx(22 / 1024)
    assert sign_test(1, 9) == sign_test(9, 1)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert binomial_tail(0, 3) == pytest.approx(1 / 8)
    assert binomial_tail(3, 3) == pytest.approx(1.0)
    assert 0 < sign_test(2000, 0) < 1e-300 or sign_test(2000, 0) == 0.0  # no overflow
