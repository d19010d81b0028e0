"""Whose reward each item of a ``/get_reward`` request is: read from ``labels``.

RLHF pipelines cannot always add a field to their reward requests. OpenRLHF sends ``query``,
``prompts`` and ``labels``, where each label is the value of the dataset column named by
``--data.label_key`` (or ``""`` without one). With ``mrm serve --user-field labels`` that
column names the user: a plain id (``"u17"``, or an integer id), an object holding
``{"user_id": ...}``, or a string holding that object as JSON. An empty label (``""`` or
null) names nobody: the item is scored by the prior.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any


class LabelError(ValueError):
    """A label that names no user in a form this server reads; the message says which."""


def user_of_label(label: Any, index: int) -> str | None:
    """The user id that ``label`` (item ``index`` of ``labels``) names; None for nobody."""
    if label is None or label == "":
        return None
    if isinstance(label, bool):  # before int: True is an int to Python
        raise LabelError(f"labels[{index}] is {label}, not a user id")
    if isinstance(label, int):
        return str(label)
    if isinstance(label, float):
        if math.isfinite(label) and label.is_integer():
            return str(int(label))
        raise LabelError(f"labels[{index}] is {label}, not a user id")
    if isinstance(label, str):
        if label.lstrip().startswith("{"):
            try:
                decoded = json.loads(label)
            except json.JSONDecodeError:
                raise LabelError(
                    f"labels[{index}] starts like a JSON object but is not one"
                ) from None
            return user_in_object(decoded, index)
        return label
    if isinstance(label, dict):
        return user_in_object(label, index)
    raise LabelError(f"labels[{index}] is a {type(label).__name__}, not a user id")


def user_in_object(value: Any, index: int) -> str | None:
    if not isinstance(value, dict) or "user_id" not in value:
        raise LabelError(f"labels[{index}] is an object without 'user_id'")
    inner = value["user_id"]
    if isinstance(inner, dict):
        raise LabelError(f"labels[{index}].user_id is an object, not a user id")
    return user_of_label(inner, index)


def users_of_labels(labels: Sequence[Any]) -> list[str | None]:
    """One user id (or None) per label; :class:`LabelError` names the first bad one."""
    return [user_of_label(label, index) for index, label in enumerate(labels)]


def win_probability(reward: float) -> float:
    """``sigmoid(reward)``: under the Bradley-Terry model, the probability that the response
    beats one of reward 0; in [0, 1] and monotone in the reward (OpenRLHF's ``scores``)."""
    if reward >= 0:
        return 1.0 / (1.0 + math.exp(-reward))
    tail = math.exp(reward)  # never overflows for very negative rewards
    return tail / (1.0 + tail)


def users_of_request(body: Any, user_field: str) -> list[str | None]:
    """Each item's user of a ``/get_reward`` body: ``user_id`` (all), ``user_ids``, or
    ``labels`` where ``user_field`` is ``labels``; :class:`LabelError` for bad labels."""
    if body.user_id is not None or body.user_ids is not None:
        return body.user_ids or [body.user_id] * len(body.query)
    if user_field != "labels" or body.labels is None:
        return [None] * len(body.query)
    if len(body.labels) != len(body.query):
        raise LabelError(f"'labels' has {len(body.labels)} items but 'query' {len(body.query)}")
    try:
        return users_of_labels(body.labels)
    except LabelError as error:
        raise LabelError(f"{error} (--user-field labels)") from None
