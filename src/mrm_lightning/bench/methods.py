"""What the benchmark runs: the methods, the few-shot points, and where their configs are."""

from __future__ import annotations

from pathlib import Path

PEERS = ("global", "per_user", "finetune", "lore", "pal", "vpl")
METHODS = (*PEERS, "mrm", "mrm_rpo")
SHOTS = (1, 2, 4, 8, 16, 32)  # support pairs per unseen user on the few-shot curve

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
