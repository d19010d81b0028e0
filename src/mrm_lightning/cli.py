"""The ``mrm`` command: LightningCLI over the MRM module and the episodic data module.

mrm fit --config configs/synthetic.yaml
mrm test --config configs/synthetic.yaml --ckpt_path path/to/best.ckpt
mrm fit --config configs/synthetic.yaml --print_config
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from .datamodule import EpisodicDataModule
from .module import MetaRewardModel


class MRMCLI(LightningCLI):
    """LightningCLI with the embedding size linked from data to model and test-after-fit."""

    def add_arguments_to_parser(self, parser) -> None:
        # the model's input size is whatever the data source produces: given once, not twice.
        parser.link_arguments("data.embedding_dim", "model.embedding_dim", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, test the checkpoint selected on validation (the best one).",
        )

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit"):
            return
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        self.trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False
        )  # the ResultsReport table is the summary


def cli_main(args: list[str] | None = None) -> MRMCLI:
    """Entry point of ``mrm`` and ``python -m mrm_lightning``; ``args`` lets tests call it."""
    return MRMCLI(
        MetaRewardModel,
        EpisodicDataModule,
        args=args,
        save_config_kwargs={"overwrite": True},
    )


def fit_and_report(args: list[str], out_dir: str | Path) -> dict:
    """Run ``mrm fit ARGS`` (with test_after_fit in the config) logging under ``out_dir``.

    Returns the ResultsReport's ``results.json`` plus ``val_user_acc``, the validation score
    of the checkpoint that was selected and tested: what experiment scripts compare.
    """
    cli = cli_main(
        [
            "fit",
            *args,
            "--trainer.logger.init_args.save_dir",
            str(out_dir),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    results = json.loads(next(Path(out_dir).rglob("results.json")).read_text())
    results["val_user_acc"] = float(cli.trainer.checkpoint_callback.best_model_score)
    return results


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``mrm``): returns nothing, so the exit status is 0.

    ``mrm embed --config X`` encodes the config's text source into its cache (sharded over
    ``--trainer.devices``); ``mrm adapt`` and ``mrm score`` use a trained checkpoint
    (:mod:`mrm_lightning.use_cli`); ``mrm serve`` serves one over HTTP
    (:mod:`mrm_lightning.server`); every other subcommand is LightningCLI's.
    """
    argv = sys.argv[1:] if args is None else args
    if argv[:1] in (["adapt"], ["score"]):
        from .use_cli import use_main

        use_main(argv)
        return
    if argv[:1] == ["serve"]:
        from .server import serve_main

        serve_main(argv[1:])
        return
    if argv[:1] != ["embed"]:
        cli_main(args)  # None: LightningCLI reads sys.argv itself
        return
    from .embed import embed_source
    from .text_sources import TextPreferences

    # sys.argv stays as it is: DDP starts the other processes by running it again. So the
    # arguments after "embed" go in explicitly, and LightningCLI's note about that is moot.
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run.*")
    cli = MRMCLI(
        MetaRewardModel, EpisodicDataModule, args=argv[1:], run=False, save_config_callback=None
    )
    source = cli.datamodule.source
    if not isinstance(source, TextPreferences):
        raise SystemExit(
            f"mrm embed: data.source is {type(source).__name__}, which has no text "
            "to encode (use a text source such as RedditTLDR)"
        )
    embed_source(source, cli.trainer)
