"""mrm-lightning: personalized reward models by meta-learning (MRM) on PyTorch Lightning.

The package, from the bottom up (each layer imports only those below it; ``make lint`` checks):

- :mod:`.method`: the maths on plain tensors (reward heads, MAML, posterior, losses, metrics);
- :mod:`.data`: preference records, sources, splits, episodes, the data module, the encoder;
- :mod:`.training`: the LightningModule, RPO, evaluation, the report, checkpoints, LightningCLI;
- :mod:`.use` (a trained model: adapt, score, serve) and :mod:`.peers` (the methods MRM is
  compared with); :mod:`.bench`, the comparison; :mod:`.cli`, the ``mrm`` command.

The public names below are importable from the package root (``from mrm_lightning import
MetaRewardModel``), and usable as ``class_path: mrm_lightning.NAME`` in configs. They are
imported when first used, so ``mrm --help`` does not pay for torch and Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module (under mrm_lightning) that defines it
_PUBLIC = {
    "BaseRewardFunctions": "method.heads",
    "combine": "method.heads",
    "EpisodicDataModule": "data.datamodule",
    "PreferenceData": "data.preferences",
    "PreferenceSource": "data.preferences",
    "TextEncoder": "data.encoder",
    "TextPreferences": "data.sources.text",
    "RedditTLDR": "data.sources.tldr",
    "PRISM": "data.sources.prism",
    "PairsFiles": "data.sources.pairs",
    "RatingsFiles": "data.sources.ratings",
    "SyntheticPopulation": "data.sources.synthetic",
    "SemiSyntheticUsers": "data.sources.semisynthetic",
    "TextPopulation": "data.sources.text_population",
    "MetaRewardModel": "training.module",
    "RobustPersonalization": "training.rpo",
    "ResultsReport": "training.report",
    "AtomicCheckpointIO": "training.checkpointing",
    "ResumeCheckpoint": "training.checkpointing",
    "PersonalizedRewardModel": "use.inference",
    "UserProfile": "use.profiles",
    "ProfileStore": "use.store",
    "MRMRewardFunction": "use.trl_reward",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


if TYPE_CHECKING:  # for type checkers and IDEs; at run time, __getattr__ above  # noqa: F401
    from .data.datamodule import EpisodicDataModule
    from .data.encoder import TextEncoder
    from .data.preferences import PreferenceData, PreferenceSource
    from .data.sources.pairs import PairsFiles
    from .data.sources.prism import PRISM
    from .data.sources.ratings import RatingsFiles
    from .data.sources.semisynthetic import SemiSyntheticUsers
    from .data.sources.synthetic import SyntheticPopulation
    from .data.sources.text import TextPreferences
    from .data.sources.text_population import TextPopulation
    from .data.sources.tldr import RedditTLDR
    from .method.heads import BaseRewardFunctions, combine
    from .training.checkpointing import AtomicCheckpointIO, ResumeCheckpoint
    from .training.module import MetaRewardModel
    from .training.report import ResultsReport
    from .training.rpo import RobustPersonalization
    from .use.inference import PersonalizedRewardModel
    from .use.profiles import UserProfile
    from .use.store import ProfileStore
    from .use.trl_reward import MRMRewardFunction
