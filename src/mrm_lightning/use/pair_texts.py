"""A pair of texts as the model reads it: (history, prompt, chosen, rejected), from a dict or
a record-like object; history as (role, content) turns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text_pair(pair: Any) -> tuple[tuple, str, str, str]:
    """(history, prompt, chosen, rejected) of a dict or a record-like object."""
    get = (
        pair.get
        if isinstance(pair, Mapping)
        else lambda key, default=None: getattr(pair, key, default)
    )
    values = [get(key) for key in ("prompt", "chosen", "rejected")]
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"a pair needs string 'prompt', 'chosen' and 'rejected', got {pair!r}")
    history = tuple((str(r), str(c)) for r, c in turns(get("history") or ()))
    return (history, *values)


def turns(history) -> list[tuple[str, str]]:
    """History as (role, content): from pairs, or from ``{"role", "content"}`` dicts."""
    return [(t["role"], t["content"]) if isinstance(t, Mapping) else tuple(t) for t in history]
