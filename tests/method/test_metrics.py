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


def test_tempered_nll_grid_by_hand():
    import math

    from mrm_lightning.method.metrics import TemperedNLLGrid

    grid = TemperedNLLGrid(ways=2, temperatures=(0.5, 1.0))
    # way 0: p = 0.5 for both pairs: log 2 at any temperature; way 1: p = sigmoid(1) and
    # sigmoid(-1): at T = 0.5 the logits double, -log sigmoid(2) and -log sigmoid(-2)
    s = 1 / (1 + math.exp(-1.0))
    grid.update(torch.tensor([[0.5, 0.5], [s, 1 - s]]))
    expected_1 = [(math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 2,
                  (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2]  # fmt: skip
    got = grid.compute()
    assert got[0].tolist() == pytest.approx([math.log(2)] * 2)
    assert got[1].tolist() == pytest.approx(expected_1, rel=1e-6)
