"""``mrm embed --config X``: encode the config's text source into its embedding cache, sharded
over ``--trainer.devices`` (:mod:`mrm_lightning.data.embed`)."""

from __future__ import annotations

import warnings

from ..data.embed import embed_source
from ..data.sources.text import TextPreferences
from ..training.configs import with_shipped_configs
from ..training.lightning_cli import cli_main


def run(command: str, argv: list[str], from_sys_argv: bool) -> None:
    # sys.argv stays as it is: DDP starts the other processes by running it again. So the
    # arguments after "embed" go in explicitly, and LightningCLI's note about that is moot.
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run.*")
    cli = cli_main(with_shipped_configs(argv), run=False, prog="mrm embed")
    source = cli.datamodule.source
    if not isinstance(source, TextPreferences):
        raise ValueError(
            f"data.source is {type(source).__name__}, which has no text for mrm embed to "
            "encode (use a text source such as RedditTLDR)"
        )
    embed_source(source, cli.trainer)
