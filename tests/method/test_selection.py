"""Choosing the adaptation strength: by hand."""

import math

import pytest

from mrm_lightning.method.selection import select_adaptation


def test_the_best_accuracy_wins():
    assert select_adaptation([0.60, 0.71, 0.70], [0.0, 1.0, 2.0]) == 1


def test_a_tie_goes_to_the_weaker_adaptation():
    assert select_adaptation([0.70, 0.70, 0.65], [0.0, 1.0, 2.0]) == 0
    assert select_adaptation([0.70, 0.70], [2.0, 0.5]) == 1  # order of the list does not matter


def test_nan_never_wins_unless_everything_is_nan():
    assert select_adaptation([math.nan, 0.5], [0.0, 1.0]) == 1
    assert select_adaptation([math.nan, math.nan], [1.0, 0.0]) == 1


def test_mismatched_lists_are_refused():
    with pytest.raises(ValueError, match="one accuracy per"):
        select_adaptation([0.5], [0.0, 1.0])


def test_clearly_better_by_hand():
    import torch

    from mrm_lightning.method.selection import clearly_better

    reference = torch.tensor([0.5, 0.5, 0.5, 0.5])
    # differences 0.1, 0.1, 0.1, 0.1: mean 0.1, sd 0 -> clearly better at any margin
    assert clearly_better(reference + 0.1, reference, 2.0)
    # differences +0.3, -0.1, +0.3, -0.1: mean 0.1, sd 0.2309, se 0.1155 -> 0.87 se
    candidate = torch.tensor([0.8, 0.4, 0.8, 0.4])
    assert clearly_better(candidate, reference, 0.8)
    assert not clearly_better(candidate, reference, 1.0)
    assert not clearly_better(reference - 0.1, reference, 0.0)  # worse is never better
    assert not clearly_better(torch.empty(0), torch.empty(0), 1.0)


def test_family_margin_by_hand():
    from mrm_lightning.method.selection import family_margin

    # one comparison at alpha 0.05: the one-sided 95% normal quantile
    assert family_margin(0.05, 1) == pytest.approx(1.6449, abs=1e-4)
    # 4 strengths at each of 5 validations: alpha / 20 = 0.0025 -> z(0.9975) = 2.807
    assert family_margin(0.05, 20) == pytest.approx(2.8070, abs=1e-4)
    assert family_margin(0.05, 0) == family_margin(0.05, 1)  # before any comparison
    with pytest.raises(ValueError, match="alpha"):
        family_margin(0.0, 4)
