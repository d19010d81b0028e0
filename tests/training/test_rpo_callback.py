"""The RPO callback's objective, as the module receives it: soft weights from each user's own
loss, and the hard tail (smoothness <= 0) chosen over the whole meta-batch."""

from __future__ import annotations

import pytest
import torch

from mrm_lightning import MetaRewardModel, RobustPersonalization
from mrm_lightning.method.losses import rpo_tail_mask


def installed(smoothness: float, tail_fraction: float) -> RobustPersonalization:
    rpo = RobustPersonalization(tail_fraction=tail_fraction, smoothness=smoothness)
    module = MetaRewardModel(embedding_dim=4, num_base_rewards=2)
    rpo.setup(None, module, "fit")  # no Trainer: one process
    assert module.task_loss_reducer is rpo
    return rpo


@pytest.mark.parametrize("tail_fraction, kept", [(1.0, 4), (0.5, 2), (0.25, 1)])
def test_the_hard_tail_objective_sums_exactly_its_share(tail_fraction, kept):
    losses = torch.tensor([0.3, 1.2, 0.7, 0.9], requires_grad=True)
    objective = installed(0.0, tail_fraction)(losses)
    worst = sorted(losses.tolist(), reverse=True)[:kept]
    assert objective.item() == pytest.approx(sum(worst))
    objective.backward()
    assert losses.grad.tolist() == rpo_tail_mask(losses, tail_fraction).tolist()


def test_soft_weights_keep_their_gradient_through_the_loss():
    losses = torch.tensor([0.5, 1.5], requires_grad=True)
    objective = installed(0.5, 0.5)(losses)  # tau = 1.0, the median: quantile(L, 1 - rho)
    weights = torch.sigmoid((losses.detach() - 1.0) / 0.5)
    assert objective.item() == pytest.approx(float((weights * losses.detach()).sum()))
    objective.backward()
    # d(a L)/dL = a + L a (1 - a) / gamma: the weight's own gradient flows (not detached)
    expected = weights + losses.detach() * weights * (1 - weights) / 0.5
    torch.testing.assert_close(losses.grad, expected)
