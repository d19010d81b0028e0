"""What the encoder and cache tests share: a tiny encoder, a record of the texts it encodes,
and the cache's segments on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrm_lightning.data.cache import META
from mrm_lightning.data.encoder import TextEncoder


class SimulatedKill(BaseException):
    """Like KeyboardInterrupt: not an Exception, so no ``except OSError`` swallows it."""


def make_encoder(model_dir: Path, **settings) -> TextEncoder:
    return TextEncoder(
        model=str(model_dir), **{"max_length": 32, "batch_size": 3, "device": "cpu", **settings}
    )


def record_encoded(monkeypatch: pytest.MonkeyPatch, encoder: TextEncoder) -> list:
    """Wrap ``encoder.encode_batch`` (what `encode` and `mrm embed` call); the returned list
    gets every text the model receives, batch after batch."""
    texts: list = []
    original = encoder.encode_batch

    def recording(items):
        texts.extend(items)
        return original(items)

    monkeypatch.setattr(encoder, "encode_batch", recording)
    return texts


def forbid_encoding(monkeypatch: pytest.MonkeyPatch, encoder: TextEncoder) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the encoder must not be used on a cache hit")

    monkeypatch.setattr(encoder, "load", refuse)
    monkeypatch.setattr(encoder, "encode_batch", refuse)


def segments(cache_dir: Path) -> list[str]:
    """``encoder folder/segment`` of every complete segment under ``cache_dir``."""
    if not cache_dir.exists():
        return []
    return sorted(
        f"{p.parent.name}/{p.name}"
        for p in cache_dir.glob("*/*")
        if not p.name.startswith(".") and (p / META).is_file()
    )


def all_rows(table):
    import torch

    return table[torch.arange(len(table))]
