"""What the benchmark runs: the methods, the few-shot points, and where their configs are."""

from __future__ import annotations

from ..training.configs import CONFIGS

PEERS = ("global", "per_user", "finetune", "lore", "pal", "vpl")
METHODS = (*PEERS, "mrm", "mrm_rpo")
SHOTS = (1, 2, 4, 8, 16, 32)  # support pairs per unseen user on the few-shot curve

__all__ = ["CONFIGS", "METHODS", "PEERS", "SHOTS"]
