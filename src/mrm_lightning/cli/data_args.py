"""Commands that read a run's config for its data only (``mrm diagnose``, ``mrm encoder-tune``):
``--config`` (repeatable) plus any ``--data.*`` setting, handed to the data module as ``mrm fit``
would read them."""

from __future__ import annotations

import argparse

from ..training.configs import find_config


def add_config_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--config", action="append", required=True, type=find_config, help=help)


def parse_with_data_overrides(parser: argparse.ArgumentParser, argv: list[str]):
    """The command's own settings; the ``--data.*`` ones in ``data_overrides``."""
    args, rest = parser.parse_known_args(argv)
    for flag in rest:
        if flag.startswith("--") and not flag.startswith("--data."):
            parser.error(f"{flag}: only --data.* settings are passed on to the data module")
    args.data_overrides = rest
    return args


def config_cli(args: argparse.Namespace, prog: str):
    """LightningCLI over ``args.config`` and ``args.data_overrides``, nothing run (heavy import:
    call after parsing, so that --help and mistakes answer at once)."""
    import warnings

    from ..training.lightning_cli import cli_main

    warnings.filterwarnings("ignore", message=".*args parameter is intended to run.*")
    configs = [part for config in args.config for part in ("--config", config)]
    return cli_main([*configs, *args.data_overrides], run=False, prog=prog)
