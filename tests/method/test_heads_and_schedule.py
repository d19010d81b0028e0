"""The reward head's combination and the learning-rate schedule, by hand."""

import math

import pytest
import torch

from mrm_lightning.method.heads import BaseRewardFunctions, combine
from mrm_lightning.method.schedule import warmup_cosine


def test_softmax_combination_is_a_convex_mix():
    weights = torch.tensor([[0.0, math.log(3.0)]])  # softmax -> [0.25, 0.75]
    base = torch.tensor([[[2.0, 4.0], [0.0, 8.0]]])
    torch.testing.assert_close(combine(weights, base, "softmax"), torch.tensor([[3.5, 6.0]]))


def test_linear_combination_uses_raw_weights():
    base = torch.tensor([[[2.0, 4.0]]])
    torch.testing.assert_close(
        combine(torch.tensor([[1.0, -1.0]]), base, "linear"), torch.tensor([[-2.0]])
    )


def test_unknown_combination_is_rejected():
    with pytest.raises(ValueError, match="combination"):
        combine(torch.zeros(1, 2), torch.zeros(1, 1, 2), "product")


def test_base_functions_need_at_least_one_function():
    with pytest.raises(ValueError, match="num_base_rewards"):
        BaseRewardFunctions(embedding_dim=4, num_base_rewards=0)


def test_base_functions_shapes_scale_and_mlp_option():
    linear = BaseRewardFunctions(4, 3, input_scale=0.5)
    h = torch.randn(2, 5, 4)
    assert linear(h).shape == (2, 5, 3)
    torch.testing.assert_close(linear(h), linear.net(h * 0.5))
    assert BaseRewardFunctions(4, 3, hidden_dim=8)(h).shape == (2, 5, 3)


@pytest.mark.parametrize("hidden_dim", [0, 8])
def test_scaling_outputs_or_weights_equals_scaling_the_embeddings(hidden_dim):
    # the head never scales (copies) the embeddings; values and gradients are as if it did
    torch.manual_seed(0)
    head = BaseRewardFunctions(6, 3, hidden_dim=hidden_dim, input_scale=0.01)
    head.fitted_scale.fill_(7.0)
    h = torch.randn(2, 5, 6)
    got = head(h)
    got_grads = torch.autograd.grad(got.square().sum(), list(head.parameters()))
    want = head.net(h * 0.07)
    want_grads = torch.autograd.grad(want.square().sum(), list(head.parameters()))
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)
    assert list(head.state_dict()) == ["fitted_scale"] + [
        f"net.{name}" for name, _ in head.net.named_parameters()
    ]


def test_warmup_cosine_by_hand():
    # 100 steps, 10 of warm-up: 0.1, 0.2, ... 1.0, then a half cosine from 1 to 0.
    assert warmup_cosine(0, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 0.1) == pytest.approx(0.5)  # half-way through the decay
    assert warmup_cosine(100, 100, 0.1) == pytest.approx(0.0)
    assert warmup_cosine(0, 100, 0.0) == pytest.approx(1.0)  # no warm-up
