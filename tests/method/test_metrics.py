"""User-level accuracy: the unweighted mean over users, by hand."""

import pytest
import torch

from mrm_lightning.method.metrics import UserAccuracy


def test_user_level_accuracy_is_a_mean_over_users_not_pairs():
    metric = UserAccuracy()
    metric.update(
        torch.tensor([[1.0, -1.0, 2.0, 9.0], [1.0, 1.0, 9.0, 9.0]]),
        torch.tensor([[True, True, True, False], [True, True, False, False]]),
    )
    metric.update(torch.tensor([[-1.0]]), torch.tensor([[True]]))
    # users: 2/3, 2/2, 0/1 -> (2/3 + 1 + 0) / 3 = 0.5556; pooled over pairs it would be 4/6.
    assert metric.compute().item() == pytest.approx((2 / 3 + 1 + 0) / 3)
    torch.testing.assert_close(metric.per_user_values(), torch.tensor([2 / 3, 1.0, 0.0]))


def test_users_without_pairs_are_ignored_and_reset_clears():
    metric = UserAccuracy()
    metric.update(torch.tensor([[1.0], [5.0]]), torch.tensor([[True], [False]]))
    assert metric.compute().item() == 1.0
    assert metric.users.item() == 1
    metric.reset()
    metric.update(torch.tensor([[-1.0]]), torch.tensor([[True]]))
    assert metric.compute().item() == 0.0


def test_no_users_is_nan_and_an_empty_batch_counts_nobody():
    metric = UserAccuracy()
    assert torch.isnan(metric.compute())
    metric.update(torch.zeros(0, 0), torch.zeros(0, 0, dtype=torch.bool))
    assert torch.isnan(metric.compute()) and metric.per_user_values().numel() == 0
    metric.update(torch.tensor([[0.0, 2.0]]), torch.tensor([[True, True]]))  # 0 is not right
    assert metric.compute().item() == 0.5
