"""Peer methods of personalized reward modeling, on MRM's data module and metric.

Each is a LightningModule on :class:`mrm_lightning.EpisodicDataModule`, scored with the same
user-level accuracy and the same validation-only selection (:mod:`.evaluation`); the
benchmark (:mod:`.benchmark`, ``experiments/benchmark.py``, ``mrm bench``) runs them with MRM.
"""

from .evaluation import PeerModel
from .finetune import FineTunedGlobal
from .global_model import GlobalRewardModel
from .lore import LoRe
from .pal import PAL
from .per_group import PerGroupModel
from .per_user import PerUserModel
from .user_weights import UserWeightsModel
from .vpl import VPL

__all__ = [
    "FineTunedGlobal",
    "GlobalRewardModel",
    "LoRe",
    "PAL",
    "PeerModel",
    "PerGroupModel",
    "PerUserModel",
    "UserWeightsModel",
    "VPL",
]
