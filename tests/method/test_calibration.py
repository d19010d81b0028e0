"""Calibration measures and temperature scaling, against numbers worked out by hand."""

import math

import pytest
import torch

from mrm_lightning.method.calibration import (
    binary_nll,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    temper,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_ece_of_one_pair_per_bin_is_the_mean_gap():
    # bins 1, 2, 8, 9: gaps 0.15, 0.75, 0.15, 0.05, each a quarter of the pairs
    probs, labels = t(0.15, 0.25, 0.85, 0.95), t(0, 1, 1, 1)
    assert expected_calibration_error(probs, labels) == pytest.approx(1.1 / 4)


def test_ece_compares_a_bins_mean_probability_with_its_observed_share():
    # bin 7 holds 0.72, 0.78, 0.74: mean 0.74667 against 2/3 observed, gap 0.08 for 3/4 of the
    # pairs; bin 0 holds 0.05 against 0: gap 0.05 for 1/4. ECE = 0.06 + 0.0125
    probs, labels = t(0.72, 0.78, 0.74, 0.05), t(1, 0, 1, 0)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0725)
    # 2 bins group the pairs the same way (0.72, 0.78, 0.74 | 0.05): the same ECE
    assert expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(0.0725)


def test_brier_and_nll_by_hand():
    probs, labels = t(0.15, 0.25, 0.85, 0.95), t(0, 1, 1, 1)
    # (0.0225 + 0.5625 + 0.0225 + 0.0025) / 4
    assert brier_score(probs, labels) == pytest.approx(0.1525)
    assert brier_score(t(0.5, 0.5), t(0, 1)) == pytest.approx(0.25)
    # -(ln 0.8 + ln 0.5) / 2
    assert binary_nll(t(0.8, 0.5), t(1, 0)) == pytest.approx((math.log(1.25) + math.log(2)) / 2)
    assert math.isfinite(binary_nll(t(1.0, 0.0), t(0, 1)))  # clamped, not infinite


def test_temper_divides_the_logit():
    # logit(0.8) = ln 4; / 2 -> ln 2 -> 2/3; / 0.5 -> ln 16 -> 16/17; 0.5 stays 0.5
    assert temper(t(0.8, 0.5), 2.0).tolist() == pytest.approx([2 / 3, 0.5])
    assert temper(t(0.8, 0.2), 0.5).tolist() == pytest.approx([16 / 17, 1 / 17])
    assert temper(t(0.8), 1.0).tolist() == pytest.approx([0.8])
    with pytest.raises(ValueError, match="temperature"):
        temper(t(0.8), 0.0)


def test_fitted_temperature_matches_the_observed_share():
    # p = 0.9 (logit ln 9) right 3 times in 4, and p = 0.1 mirrored: the NLL is least where
    # sigmoid(ln 9 / T) = 3/4, i.e. ln 9 / T = ln 3: T = 2
    probs, labels = t(0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1), t(1, 1, 1, 0, 0, 0, 0, 1)
    assert fit_temperature(probs, labels) == pytest.approx(2.0, rel=1e-5)
    # under-confident: p = 0.6 (logit ln 1.5) right 9 times in 10: ln 1.5 / T = ln 9
    probs, labels = t(*[0.6] * 10), t(*[1] * 9, 0)
    assert fit_temperature(probs, labels) == pytest.approx(math.log(1.5) / math.log(9), rel=1e-5)
    # all right: as sharp as the search allows
    assert fit_temperature(t(0.7, 0.3), t(1, 0), lowest=0.1) == pytest.approx(0.1, rel=1e-4)


def test_reliability_bins_by_hand_and_consistent_with_ece():
    probs, labels = t(0.05, 0.12, 0.18, 0.95, 1.0), t(0, 0, 1, 1, 1)
    mean_p, observed, counts = reliability_bins(probs, labels)
    assert counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]  # p = 1 in the last bin
    assert mean_p[[0, 1, 9]].tolist() == pytest.approx([0.05, 0.15, 0.975])
    assert observed[[0, 1, 9]].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert torch.isnan(mean_p[2]) and torch.isnan(observed[5])
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(500, generator=gen, dtype=torch.float64) * 0.999
    labels = (torch.rand(500, generator=gen, dtype=torch.float64) < probs**2).double()
    mean_p, observed, counts = reliability_bins(probs, labels)
    keep = counts > 0
    by_bins = float(((observed - mean_p).abs()[keep] * counts[keep]).sum() / 500)
    assert expected_calibration_error(probs, labels) == pytest.approx(by_bins)
