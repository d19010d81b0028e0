"""``mrm fit / validate / test / predict``: LightningCLI over MRM
(:mod:`mrm_lightning.training.lightning_cli`). ``--config NAME`` also finds the configs shipped
with the package (``mrm fit --config synthetic`` from an installed wheel)."""

from __future__ import annotations

import sys

from ..training.configs import with_shipped_configs
from ..training.lightning_cli import cli_main


def run(command: str, argv: list[str], from_sys_argv: bool) -> None:
    argv = with_shipped_configs(argv)
    if not from_sys_argv:
        cli_main([command, *argv])
        return
    # LightningCLI reads sys.argv itself, and DDP starts its other processes by running
    # sys.argv again: they must see the resolved config paths too
    sys.argv[2:] = argv
    cli_main(None)
