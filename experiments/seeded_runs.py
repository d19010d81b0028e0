"""What the per-seed experiment scripts share: the ``mrm fit`` arguments of one seed, and a
data module's pairs as embeddings."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch
import yaml


def source_takes_seed(config: str) -> bool:
    """Whether the config's data source draws its population from a seed (synthetic and
    semi-synthetic users do; a release of real pairs does not)."""
    source = yaml.safe_load(Path(config).read_text())["data"]["source"]["class_path"]
    module, _, name = source.rpartition(".")
    return "seed" in inspect.signature(getattr(importlib.import_module(module), name)).parameters


def seed_args(config: str, seed: int) -> list[str]:
    """``--config`` and the seeds of one run: training, split and (where it has one) source."""
    source = ["--data.source.init_args.seed", str(seed)] if source_takes_seed(config) else []
    return ["--config", config, "--seed_everything", str(seed), "--data.seed", str(seed), *source]


def pair_embeddings(datamodule, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P, D]`` chosen and rejected embeddings of the data module's pairs ``rows``."""
    data = datamodule.data
    return data.embeddings[data.chosen[rows]].float(), data.embeddings[data.rejected[rows]].float()
