"""Every method tuned alike (``mrm bench --grid FILE``): a grid of the same size over each
method's own main settings, chosen on the same validation users; ``configs/peers/grids.yaml``
is the shipped one."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

Settings = dict[str, object]  # a setting as on the command line (``model.init_args.K``) -> value


def read_grid(path: str | Path, methods: list[str]) -> dict[str, list[Settings]]:
    """Each of ``methods``' settings from a YAML file of ``method: [settings, ...]``; every method
    must have the same number of them (the same budget), and each a mapping."""
    grid = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: expected a mapping of method -> list of settings")
    missing = [m for m in methods if m not in grid]
    if missing:
        raise ValueError(f"{path}: no grid for {', '.join(missing)}")
    for method in methods:
        points = grid[method]
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            raise ValueError(f"{path}: {method}: expected a list of mappings of setting -> value")
    sizes = {method: len(grid[method]) for method in methods}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{m} {n}" for m, n in sizes.items())
        raise ValueError(f"{path}: every method needs the same number of settings, got {listed}")
    return {method: grid[method] for method in methods}


def setting_args(settings: Settings) -> list[str]:
    """``--key value`` arguments for LightningCLI (lists and mappings as JSON)."""
    args = []
    for key, value in settings.items():
        text = json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)
        args += [f"--{key}", text]
    return args


def describe(settings: Settings) -> str:
    """``K=4, latent_dim=16``: the settings by their last name, for tables."""
    if not settings:
        return "the config's"
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in settings.items())
