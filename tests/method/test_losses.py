"""Bradley-Terry loss, per-user accuracy and RPO weights against numbers worked out by hand."""

import math

import pytest
import torch

from mrm_lightning.method.losses import (
    bradley_terry_loss,
    per_user_accuracy,
    rpo_objective,
    rpo_tail_mask,
    rpo_threshold,
    rpo_weights,
)


def test_bradley_terry_loss_per_user_ignores_padding():
    margin = torch.tensor([[0.0, 2.0, 99.0], [-1.0, 5.0, 5.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # user 0: (log 2 + log(1 + e^-2)) / 2; user 1: log(1 + e)
    expected = torch.tensor([(math.log(2) + math.log(1 + math.exp(-2))) / 2, math.log(1 + math.e)])
    torch.testing.assert_close(bradley_terry_loss(margin, mask), expected)


def test_user_with_no_pairs_gets_zero_not_nan():
    loss = bradley_terry_loss(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))
    assert loss.item() == 0.0


def test_per_user_accuracy_counts_ties_as_wrong():
    margin = torch.tensor([[1.0, -1.0, 0.5, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert per_user_accuracy(margin, mask).item() == pytest.approx(2 / 3)
    assert per_user_accuracy(torch.tensor([[0.0]]), torch.tensor([[True]])).item() == 0.0


def test_rpo_threshold_is_the_upper_quantile():
    losses = torch.tensor([4.0, 1.0, 3.0, 2.0])
    assert rpo_threshold(losses, 0.5).item() == pytest.approx(2.5)  # median
    assert rpo_threshold(losses, 0.25).item() == pytest.approx(3.25)  # 75th percentile
    assert rpo_threshold(losses, 1.0).item() == pytest.approx(1.0)  # everybody is the tail


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_rpo_tail_fraction_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match="tail_fraction"):
        rpo_threshold(torch.ones(3), bad)


def test_rpo_soft_weights_and_objective():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    weights = rpo_weights(losses, torch.tensor(2.5), smoothness=0.5)
    # sigmoid((L - 2.5) / 0.5) = sigmoid(-3), sigmoid(-1), sigmoid(1), sigmoid(3)
    expected = torch.tensor([0.0474259, 0.2689414, 0.7310586, 0.9525741])
    torch.testing.assert_close(weights, expected)
    total = 1 * 0.0474259 + 2 * 0.2689414 + 3 * 0.7310586 + 4 * 0.9525741  # 6.588781
    assert rpo_objective(losses, 0.5, 0.5).item() == pytest.approx(total, rel=1e-6)
    assert rpo_objective(losses, 0.5, 0.5, reduction="mean").item() == pytest.approx(
        total / 4, rel=1e-6
    )


def test_rpo_hard_mask_when_smoothness_not_positive():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rpo_weights(losses, torch.tensor(2.5), 0.0, 0.5).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert rpo_objective(losses, 0.5, smoothness=-1.0).item() == pytest.approx(7.0)
    with pytest.raises(ValueError, match="needs tail_fraction"):
        rpo_weights(losses, torch.tensor(2.5), 0.0)


def test_the_hard_tail_is_exactly_its_share_of_users():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # rho = 1 is everybody (1[L > tau] dropped the easiest user: tau is then the minimum)
    assert rpo_tail_mask(losses, 1.0).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert rpo_objective(losses, 1.0, smoothness=0.0).item() == pytest.approx(10.0)
    # ceil(rho * B) users: 3 of 5 at rho 1/2, 1 of 4 at rho 1/4
    assert rpo_tail_mask(torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0]), 0.5).tolist() == [
        1.0, 0.0, 1.0, 0.0, 1.0,
    ]  # fmt: skip
    assert rpo_tail_mask(losses, 0.25).tolist() == [0.0, 0.0, 0.0, 1.0]


def test_two_tied_losses_keep_one_user_and_a_gradient():
    losses = torch.tensor([2.0, 2.0], requires_grad=True)
    assert rpo_tail_mask(losses, 0.5).tolist() == [1.0, 0.0]  # the earlier of the tie
    objective = rpo_objective(losses, 0.5, smoothness=0.0)
    assert objective.item() == pytest.approx(2.0)  # 1[L > tau] gave 0 here: no user at all
    objective.backward()
    assert losses.grad.tolist() == [1.0, 0.0]


def test_rpo_gradient_with_and_without_detached_weights():
    # d(a L)/dL = a + L a (1 - a) / gamma with a = sigmoid((L - tau)/gamma); tau is a constant.
    a = 0.9525741  # user with L = 4, tau = 2.5, gamma = 0.5
    for detach, expected in ((False, a + 4 * a * (1 - a) / 0.5), (True, a)):
        losses = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
        rpo_objective(losses, 0.5, 0.5, detach_weights=detach).backward()
        assert losses.grad[3].item() == pytest.approx(expected, rel=1e-5)
