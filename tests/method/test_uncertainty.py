"""The posterior over a user's weights, against hand-worked numbers and brute force."""

from __future__ import annotations

import math

import pytest
import torch

from mrm_lightning.method.uncertainty import (
    answered_precision,
    categorical_information_gain,
    categorical_moments,
    categorical_win_probability,
    gaussian_information_gain,
    gaussian_win_probability,
    laplace_precision,
    linearised_moments,
    packed_laplace_precision,
    packed_win_probability,
)

D64 = torch.float64


def test_laplace_covariance_of_a_hand_worked_2d_linear_case():
    # w = (0, 0), one pair d = (1, 2), prior precision 1: the margin is 0, so s(1-s) = 1/4 and
    # H = I + 1/4 [[1, 2], [2, 4]] = [[1.25, 0.5], [0.5, 2]], det 2.25,
    # H^-1 = [[2, -0.5], [-0.5, 1.25]] / 2.25
    weights = torch.zeros(1, 2, dtype=D64)
    differences = torch.tensor([[[1.0, 2.0]]], dtype=D64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    precision = laplace_precision(weights, differences, mask, "linear", 1.0)
    torch.testing.assert_close(precision[0], torch.tensor([[1.25, 0.5], [0.5, 2.0]], dtype=D64))
    covariance = torch.linalg.inv(precision)
    torch.testing.assert_close(
        covariance[0], torch.tensor([[8 / 9, -2 / 9], [-2 / 9, 5 / 9]], dtype=D64)
    )
    # the reward of phi = (1, 0) has mean w . phi = 0 and variance phi^T H^-1 phi = 8/9;
    # phi = (1, 1): 8/9 - 4/9 + 5/9 = 1
    base = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=D64)
    mean, variance = linearised_moments(weights, covariance, base, "linear")
    assert mean[0].tolist() == [0.0, 0.0]
    assert variance[0].tolist() == pytest.approx([8 / 9, 1.0])


def test_laplace_precision_of_a_hand_worked_softmax_case_and_padding_ignored():
    # w = (0, 0): c = (1/2, 1/2), J = [[1/4, -1/4], [-1/4, 1/4]], so g = J^T (1, 2) =
    # (-1/4, 1/4); margin c . d = 1.5, curvature sigmoid(1.5) sigmoid(-1.5)
    weights = torch.zeros(1, 2, dtype=D64)
    differences = torch.tensor([[[1.0, 2.0], [50.0, -7.0]]], dtype=D64)
    mask = torch.tensor([[True, False]])  # the second pair is padding
    precision = laplace_precision(weights, differences, mask, "softmax", 2.0)
    s = 1 / (1 + math.exp(-1.5))
    c = s * (1 - s) / 16
    torch.testing.assert_close(precision[0], torch.tensor([[2 + c, -c], [-c, 2 + c]], dtype=D64))


def test_more_pairs_only_shrink_the_variance():
    torch.manual_seed(0)
    weights = torch.randn(3, 4, dtype=D64)
    differences = torch.randn(3, 6, 4, dtype=D64)
    few = laplace_precision(weights, differences, torch.arange(6) < 2, "linear", 1.0)
    many = laplace_precision(
        weights, differences, torch.ones(3, 6, dtype=torch.bool), "linear", 1.0
    )
    base = torch.randn(3, 5, 4, dtype=D64)
    _, var_few = linearised_moments(weights, torch.linalg.inv(few), base, "linear")
    _, var_many = linearised_moments(weights, torch.linalg.inv(many), base, "linear")
    assert (var_many <= var_few + 1e-12).all()


def brute_gaussian(mean: float, variance: float, f) -> float:
    """E[f(m)], m ~ N(mean, variance), by a Riemann sum on a fine grid (brute force)."""
    sd = math.sqrt(variance)
    grid = torch.linspace(mean - 12 * sd, mean + 12 * sd, 200_001, dtype=D64)
    density = torch.exp(-0.5 * ((grid - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    return float((f(grid) * density).sum() * (grid[1] - grid[0]))


def entropy(p):
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


@pytest.mark.parametrize(
    ("mean", "variance"), [(0.0, 1.0), (1.3, 0.2), (-2.0, 9.0), (1.0, 25.0), (0.4, 1e-4)]
)
def test_gaussian_win_probability_and_information_gain_against_brute_force(mean, variance):
    m, v = torch.tensor([mean], dtype=D64), torch.tensor([variance], dtype=D64)
    p = brute_gaussian(mean, variance, torch.sigmoid)
    assert float(gaussian_win_probability(m, v)) == pytest.approx(p, abs=1e-6)
    gain = entropy(torch.tensor(p)) - brute_gaussian(
        mean, variance, lambda x: entropy(torch.sigmoid(x))
    )
    assert float(gaussian_information_gain(m, v)) == pytest.approx(float(gain), abs=1e-6)


def test_no_uncertainty_means_no_information_and_the_point_probability():
    m, v = torch.tensor([0.7], dtype=D64), torch.tensor([0.0], dtype=D64)
    assert float(gaussian_win_probability(m, v)) == pytest.approx(1 / (1 + math.exp(-0.7)))
    assert float(gaussian_information_gain(m, v)) == pytest.approx(0.0, abs=1e-12)


def test_categorical_information_gain_against_enumeration():
    # 3 base functions, q = softmax(w); the answer y to one pair: p(y=1 | k) = sigmoid(d_k).
    # I(y; k) = sum_k sum_y q_k p(y|k) log(p(y|k) / p(y)), enumerated
    weights = torch.tensor([[0.3, -1.0, 0.8]], dtype=D64)
    differences = torch.tensor([[[2.0, -1.5, 0.1], [0.5, 0.5, 0.5]]], dtype=D64)
    q = torch.softmax(weights[0], 0).tolist()
    for pair in range(2):
        likelihood = [1 / (1 + math.exp(-float(d))) for d in differences[0, pair]]
        p_yes = sum(qk * lk for qk, lk in zip(q, likelihood))
        brute = 0.0
        for qk, lk in zip(q, likelihood):
            brute += qk * lk * math.log(lk / p_yes) + qk * (1 - lk) * math.log(
                (1 - lk) / (1 - p_yes)
            )
        got = categorical_information_gain(weights, differences)[0, pair]
        assert float(got) == pytest.approx(brute, abs=1e-12)
        win = categorical_win_probability(weights, differences)[0, pair]
        assert float(win) == pytest.approx(p_yes, abs=1e-12)
    # a pair every base function answers alike tells nothing about which one is the user's
    assert float(categorical_information_gain(weights, differences)[0, 1]) == pytest.approx(0.0)


def test_categorical_moments_by_hand():
    # q = (1/2, 1/2) over rewards (1, 3): mean 2, variance 1
    mean, variance = categorical_moments(
        torch.zeros(1, 2, dtype=D64), torch.tensor([[[1.0, 3.0]]], dtype=D64)
    )
    assert mean.tolist() == [[2.0]] and variance.tolist() == [[1.0]]


def test_an_answered_pair_adds_its_gauss_newton_term():
    weights = torch.zeros(1, 2, dtype=D64)
    precision = torch.eye(2, dtype=D64).unsqueeze(0)
    after = answered_precision(weights, precision, torch.tensor([[1.0, 2.0]], dtype=D64), "linear")
    torch.testing.assert_close(
        after[0], torch.tensor([[1.25, 0.5], [0.5, 2.0]], dtype=D64)
    )  # as above


def test_packed_pairs_give_the_padded_results():
    torch.manual_seed(1)
    weights = torch.randn(3, 4, dtype=D64)
    differences = torch.randn(3, 5, 4, dtype=D64)
    mask = torch.rand(3, 5) < 0.6
    mask[:, 0] = True
    owner = mask.nonzero()[:, 0]
    packed = differences[mask]
    for combination in ("linear", "softmax"):
        padded = laplace_precision(weights, differences, mask, combination, 0.5)
        torch.testing.assert_close(
            packed_laplace_precision(weights, packed, owner, combination, 0.5), padded
        )
        covariance = torch.linalg.inv(padded)
        mean, variance = linearised_moments(weights, covariance, differences, combination)
        expected = gaussian_win_probability(mean, variance)[mask]
        got = packed_win_probability(weights, covariance, packed, owner, combination)
        torch.testing.assert_close(got, expected)
    expected = categorical_win_probability(weights, differences)[mask]
    torch.testing.assert_close(
        packed_win_probability(weights, None, packed, owner, "softmax"), expected
    )


@pytest.mark.parametrize("combination", ["linear", "softmax"])
def test_the_posterior_stays_on_the_device_of_its_inputs(combination):
    # "meta" tensors refuse to mix with CPU ones, as CUDA tensors do: a CPU-made constant
    # inside would fail here as it would on a GPU
    weights = torch.zeros(2, 3, device="meta")
    differences = torch.zeros(5, 3, device="meta")
    owner = torch.tensor([0, 0, 1, 1, 1], device="meta")
    precision = packed_laplace_precision(weights, differences, owner, combination, 1.0)
    assert precision.device.type == "meta" and precision.shape == (2, 3, 3)
    probs = packed_win_probability(weights, precision, differences, owner, combination)
    assert probs.device.type == "meta" and probs.shape == (5,)
