"""LightningCLI over the MRM module and the episodic data module (``mrm fit/validate/test``).

    mrm fit --config configs/synthetic.yaml
    mrm test --config configs/synthetic.yaml --ckpt_path path/to/best.ckpt
    mrm fit --config configs/synthetic.yaml --print_config

The command line itself (``mrm``) is :mod:`mrm_lightning.cli`; this module is what it runs, and
what experiment scripts call from Python (:func:`cli_main`, :func:`fit_and_report`). A mistake
in the settings raises :class:`UsageError`, whose message is the one line ``mrm`` prints.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from ..data.datamodule import EpisodicDataModule
from .checkpoint_file import check_ckpt_path
from .module import MetaRewardModel
from .run_folder import DiscardFailedRun

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# Lightning's messages that say nothing to our users: its own deprecation noise on torch 2.13
# (not ours to fix), a note that our IterableDatasets define __len__ (they do, on purpose: each
# process's share is exact), and advertisements for its cloud products.
KNOWN_NOISE = (r".*isinstance\(treespec, LeafSpec\).*", r".*IterableDataset.*has `__len__`.*")
LIGHTNING_INFO = "lightning.pytorch.utilities.rank_zero"


def quiet_known_noise() -> None:
    """Silence :data:`KNOWN_NOISE` and Lightning's "Tip:" lines; every other warning stays."""
    for pattern in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    info = logging.getLogger(LIGHTNING_INFO)
    if not any(isinstance(f, _NoTips) for f in info.filters):
        info.addFilter(_NoTips())


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.getMessage())


class UsageError(ValueError):
    """A mistake in the command line or a config file (an unknown or badly typed setting, a
    missing config file); the message names the setting and is meant for the user as it is.
    ``usage`` is the parser's usage text and ``problem`` the error without the ``--help`` hint
    (what ``mrm --debug`` shows, as jsonargparse would)."""

    def __init__(self, problem: str, usage: str, hint: str) -> None:
        super().__init__(f"{problem} ({hint})")
        self.problem, self.usage = problem, usage


class OneLineErrorParser(LightningArgumentParser):
    """Usage errors as a :class:`UsageError` naming the setting, instead of the whole usage
    block and exit: ``mrm`` prints it as one line (``--debug`` shows the traceback)."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # jsonargparse catches some internally and tries again
            super().error(message, ex)
        command = self.prog.replace(" [options]", "").split()[-1]
        where = f"mrm {command} --help" if command in SUBCOMMANDS else "mrm --help"
        raise UsageError(message, self.format_usage(), f"see {where}") from ex


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

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # --ckpt_path FILE is checked before LightningCLI reads its hyper-parameters and the
        # trainer loads it: an empty, cut-short or foreign file is one line naming it
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_ckpt_path(self.config[subcommand].get("ckpt_path"), subcommand)

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit"):
            return
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        self.trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False
        )  # the ResultsReport table is the summary


def cli_main(args: list[str] | None = None, run: bool = True, prog: str = "mrm") -> MRMCLI:
    """LightningCLI over MRM with ``args`` (None: ``sys.argv``, as ``mrm`` runs it; a list lets
    tests and scripts call it). ``run=False`` only builds the model, data module and trainer
    from the settings (no subcommand in ``args``, and no config saved); ``prog`` names the
    command in its usage line (e.g. ``mrm embed``)."""
    quiet_known_noise()
    return MRMCLI(
        MetaRewardModel,
        EpisodicDataModule,
        args=args,
        run=run,
        save_config_callback=SaveConfigCallback if run else None,
        save_config_kwargs={"overwrite": True},
        parser_class=OneLineErrorParser,
        parser_kwargs=None if run else {"prog": prog},
        trainer_defaults={"callbacks": [DiscardFailedRun()]},  # added to the config's callbacks
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
