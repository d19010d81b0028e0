"""What the benchmark runs: the methods, the few-shot points, and where their configs are."""

from __future__ import annotations

from ..training.configs import CONFIGS

PEERS = ("global", "per_user", "finetune", "lore", "pal", "vpl", "per_group")
METHODS = (*PEERS, "mrm", "mrm_rpo")
# what runs without --methods: per_group needs a users file with groups
# (configs/peers/per_group.yaml reads SBIC's annotators), so it runs only when asked for
DEFAULT_METHODS = tuple(m for m in METHODS if m != "per_group")
SHOTS = (1, 2, 4, 8, 16, 32)  # support pairs per unseen user on the few-shot curve

__all__ = ["CONFIGS", "DEFAULT_METHODS", "METHODS", "PEERS", "SHOTS"]
