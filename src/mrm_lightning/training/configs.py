"""The configs shipped with the package (``configs/`` of the source tree, package data in a
wheel), and ``--config NAME`` resolved against them where no such file exists here."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# src/mrm_lightning/configs links to the top-level configs/ of the source tree; a wheel holds
# copies of the files
CONFIGS = Path(str(files("mrm_lightning").joinpath("configs")))


def find_config(value: str) -> str:
    """``value`` itself where it names an existing file; else the shipped config it names
    (``synthetic``, ``synthetic.yaml``, ``configs/synthetic.yaml``, ``peers/lore.yaml``);
    else ``value`` unchanged, for LightningCLI to report as missing."""
    if Path(value).exists():
        return value
    name = value.removeprefix("configs/")
    for candidate in (CONFIGS / name, CONFIGS / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    return value


def with_shipped_configs(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config X`` / ``--config=X`` resolved by :func:`find_config`."""
    resolved = list(argv)
    for i, arg in enumerate(resolved):
        if arg == "--config" and i + 1 < len(resolved):
            resolved[i + 1] = find_config(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + find_config(arg.removeprefix("--config="))
    return resolved
