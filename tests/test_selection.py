"""Choosing the adaptation strength: by hand."""

import math

import pytest

from mrm_lightning.selection import select_adaptation


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
