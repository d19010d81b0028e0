"""mrm-lightning: personalized reward models by meta-learning (MRM) on PyTorch Lightning."""

from .datamodule import EpisodicDataModule
from .encoder import TextEncoder
from .heads import BaseRewardFunctions, combine
from .inference import PersonalizedRewardModel
from .module import MetaRewardModel
from .preferences import PreferenceData, PreferenceSource
from .profiles import ProfileStore, UserProfile
from .report import ResultsReport
from .rpo import RobustPersonalization
from .semisynthetic import SemiSyntheticUsers
from .synthetic import SyntheticPopulation
from .text_population import TextPopulation
from .text_sources import PRISM, PairsFiles, RatingsFiles, RedditTLDR, TextPreferences
from .trl_reward import MRMRewardFunction

__version__ = "0.1.0"
__all__ = [
    "BaseRewardFunctions",
    "EpisodicDataModule",
    "MetaRewardModel",
    "MRMRewardFunction",
    "PersonalizedRewardModel",
    "PreferenceData",
    "PreferenceSource",
    "ProfileStore",
    "ResultsReport",
    "RobustPersonalization",
    "SemiSyntheticUsers",
    "PRISM",
    "PairsFiles",
    "RatingsFiles",
    "RedditTLDR",
    "SyntheticPopulation",
    "TextEncoder",
    "TextPopulation",
    "TextPreferences",
    "UserProfile",
    "combine",
]
