"""Whose reward an item is, from OpenRLHF's ``labels`` (``mrm serve --user-field labels``),
and ``scores`` as the Bradley-Terry win probability against a reward of 0."""

from __future__ import annotations

import math

import pytest

from mrm_lightning.use.request_users import (
    LabelError,
    user_of_label,
    users_of_labels,
    win_probability,
)


@pytest.mark.parametrize(
    "label, user",
    [
        ("u17", "u17"),
        ("", None),
        (None, None),
        (42, "42"),
        (42.0, "42"),
        ({"user_id": "u3"}, "u3"),
        ({"user_id": 7, "topic": "x"}, "7"),
        ('{"user_id": "u3", "other": 1}', "u3"),
        ('  {"user_id": ""}', None),
        (" u 1 ", " u 1 "),  # an id is taken as it is, spaces and all
    ],
)
def test_each_form_of_label_names_its_user(label, user):
    assert user_of_label(label, 0) == user


@pytest.mark.parametrize(
    "label, words",
    [
        (True, "labels[3] is True"),
        (1.5, "labels[3] is 1.5"),
        (math.nan, "labels[3] is nan"),
        ([1], "labels[3] is a list"),
        ({"name": "u3"}, "without 'user_id'"),
        ({"user_id": {"id": 1}}, "labels[3].user_id is an object"),
        ('{"user_id": "u3"', "starts like a JSON object"),
        ('{"no": 1}', "without 'user_id'"),
    ],
)
def test_a_label_naming_no_user_is_an_error_naming_the_item(label, words):
    with pytest.raises(LabelError) as error:
        user_of_label(label, 3)
    assert words in str(error.value)


def test_labels_map_item_by_item():
    assert users_of_labels(["a", "", {"user_id": "b"}]) == ["a", None, "b"]


def test_win_probability_by_hand_and_at_the_extremes():
    assert win_probability(0.0) == 0.5
    assert win_probability(math.log(3)) == pytest.approx(0.75)  # 1 / (1 + 1/3)
    assert win_probability(-math.log(3)) == pytest.approx(0.25)
    assert win_probability(-1000.0) == 0.0 and win_probability(1000.0) == 1.0
