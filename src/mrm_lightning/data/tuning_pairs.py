"""The pairs an encoder is tuned on (stage 0), as texts: never a pair of a test unit.

Tuning reads the seen users' training pairs only (the pairs MRM meta-trains on); it chooses
how long to tune on the validation pairs (those MRM's own selection reads). Unseen users'
pairs, validation users' training pairs and every pair of a test unit are never read. The
split is the data module's own (same settings, same seed), made without any vectors: a
twin of the data module reads the source's pairs over an empty ``[T, 0]`` table, so nothing is
encoded before tuning.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from .datamodule import EpisodicDataModule
from .encoder import TextInput
from .preferences import PreferenceData, PreferenceSource
from .sources.text import TextPreferences
from .splits import TRAIN


class TextsWithoutVectors(PreferenceSource):
    """A text source's pairs over an empty ``[T, 0]`` table: what the split needs."""

    embedding_dim = 0

    def __init__(self, source: TextPreferences) -> None:
        self.source = source

    def load(self) -> PreferenceData:
        return self.source.pairs_over(torch.empty(len(self.source.texts()), 0))


@dataclass
class TuningPairs:
    """Rows of ``train`` and ``validation`` (their ``chosen`` / ``rejected``) index ``texts``.

    Attributes:
        texts: every distinct text of the source, in the embedding table's row order.
        train: the seen users' pairs of the training units (what tuning reads).
        validation: the pairs validation scores (what chooses how long to tune).
    """

    texts: list[TextInput]
    train: PreferenceData
    validation: PreferenceData


def tuning_pairs(datamodule: EpisodicDataModule) -> TuningPairs:
    """The pairs to tune ``datamodule``'s encoder on, split as ``datamodule`` splits them."""
    source = datamodule.source
    if not isinstance(source, TextPreferences):
        raise ValueError(
            f"data.source is {type(source).__name__}, which has no texts to tune an encoder "
            "on (use a text source such as RatingsFiles or RedditTLDR)"
        )
    # the constructor's own settings (LightningCLI adds keys of its own to hparams)
    accepted = inspect.signature(EpisodicDataModule.__init__).parameters
    settings = {k: v for k, v in datamodule.hparams.items() if k in accepted and k != "source"}
    settings["embedding_dtype"] = "float32"  # an empty table: nothing to store compactly
    twin = EpisodicDataModule(source=TextsWithoutVectors(source), **settings)
    twin.setup("fit")
    assert twin.split is not None
    train = twin.pairs(TRAIN, twin.split.seen_users)
    validation = twin.validation_pairs()
    if not train.num_pairs or not validation.num_pairs:
        raise ValueError(
            f"tuning needs training pairs of seen users and validation pairs; this split has "
            f"{train.num_pairs} and {validation.num_pairs} (data.val_fraction, "
            "data.unseen_fraction)"
        )
    return TuningPairs(source.texts(), train, validation)
