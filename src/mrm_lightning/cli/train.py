"""``mrm fit / validate / test / predict``: LightningCLI over MRM
(:mod:`mrm_lightning.training.lightning_cli`)."""

from __future__ import annotations

from ..training.lightning_cli import cli_main


def run(command: str, argv: list[str], from_sys_argv: bool) -> None:
    # None: LightningCLI reads sys.argv itself, which DDP's other processes run again
    cli_main(None if from_sys_argv else [command, *argv])
