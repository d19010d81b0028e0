"""The ``mrm`` command: LightningCLI over the MRM module and the episodic data module.

mrm fit --config configs/synthetic.yaml
mrm test --config configs/synthetic.yaml --ckpt_path path/to/best.ckpt
mrm fit --config configs/synthetic.yaml --print_config

Bad input and bad settings end every subcommand with one line on stderr, ``mrm: error: ...``
naming the file, line and field or the setting, and exit status 2; ``--debug`` (anywhere on
the command line) or ``MRM_DEBUG=1`` shows the full traceback (and jsonargparse's full usage)
instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .datamodule import EpisodicDataModule
from .module import MetaRewardModel
from .records import RecordError

DEBUG_FLAG, DEBUG_ENV = "--debug", "MRM_DEBUG"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
PACKAGE_DIR = Path(__file__).resolve().parent


def debug_mode() -> bool:
    """Tracebacks instead of one-line errors: ``MRM_DEBUG=1`` (which ``--debug`` sets)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def fail(message: str) -> None:
    """End with ``mrm: error: MESSAGE`` on one line of stderr, exit status 2.

    The SystemExit's text is the message too, for callers in Python that catch it.
    """
    line = one_line(message)
    print(f"mrm: error: {line}", file=sys.stderr)
    stop = SystemExit(line)
    stop.code = 2  # what the interpreter exits with; it prints nothing more for an int
    raise stop


def one_line(message: str) -> str:
    """A possibly multi-line message on one line; jsonargparse's ``Parser key "k":`` as
    ``setting 'k':``."""
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return re.sub(r'Parser key "([^"]+)":', r"setting '\1':", text)


class OneLineErrorParser(LightningArgumentParser):
    """Usage errors (unknown or badly typed settings, a missing config file) as one line
    ``mrm: error: ...`` naming the setting, exit status 2, instead of the whole usage block,
    which ``--debug`` still shows."""

    def error(self, message: str, ex: Exception | None = None):
        if debug_mode() or not self.exit_on_error:  # jsonargparse catches some internally
            super().error(message, ex)
        command = self.prog.replace(" [options]", "").split()[-1]
        where = f"mrm {command} --help" if command in SUBCOMMANDS else "mrm --help"
        fail(f"{message} (see {where})")


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
        parser_class=OneLineErrorParser,
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
    (:mod:`mrm_lightning.server`); ``mrm bench`` runs MRM against its peers
    (:mod:`mrm_lightning.peers.benchmark`); every other subcommand is LightningCLI's. Errors:
    see the module docstring.
    """
    argv = sys.argv[1:] if args is None else list(args)
    debug_before = os.environ.get(DEBUG_ENV)
    if DEBUG_FLAG in argv:
        argv = [arg for arg in argv if arg != DEBUG_FLAG]
        # DDP starts the other processes by running sys.argv again: they get --debug through
        # the inherited MRM_DEBUG, and a copy of sys.argv that still has it is stripped alike.
        os.environ[DEBUG_ENV] = "1"
        if args is None:
            sys.argv[1:] = argv
    try:
        _run(argv, from_sys_argv=args is None)
    except SystemExit as stop:  # adapt / score / serve print their one line themselves
        if debug_mode() and isinstance(stop.__context__, Exception):
            traceback.print_exception(stop.__context__)
        raise
    except Exception as error:
        line = None if debug_mode() else user_error_line(error)
        if line is None:
            raise
        fail(line)
    finally:
        if args is not None:  # called from Python (tests): leave the environment as it was
            if debug_before is None:
                os.environ.pop(DEBUG_ENV, None)
            else:
                os.environ[DEBUG_ENV] = debug_before


def user_error_line(error: BaseException) -> str | None:
    """The one line for a mistake in the input or the settings found in ``error`` or the
    exceptions it wraps (``__cause__``, ``__context__``); None for anything else, a bug."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, FileNotFoundError) and current.filename is not None:
            return f"{current.filename}: no such file"
        if isinstance(current, OSError) and current.filename is not None:
            return f"{current.filename}: {current.strerror or current}"
        if isinstance(current, RecordError) or (
            isinstance(current, ValueError) and raised_in_package(current)
        ):
            return one_line(str(current))
        current = current.__cause__ or current.__context__
    return None


def raised_in_package(error: BaseException) -> bool:
    """Whether ``error`` was raised by this package's code (a message written for users)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)


def _run(argv: list[str], from_sys_argv: bool) -> None:
    if argv[:1] in (["adapt"], ["score"]):
        from .use_cli import use_main

        use_main(argv)
        return
    if argv[:1] == ["serve"]:
        from .server import serve_main

        serve_main(argv[1:])
        return
    if argv[:1] == ["bench"]:  # MRM against its peers (experiments/benchmark.py)
        from .peers.benchmark import main as bench_main

        bench_main(argv[1:])
        return
    if argv[:1] != ["embed"]:
        cli_main(None if from_sys_argv else argv)  # None: LightningCLI reads sys.argv itself
        return
    from .embed import embed_source
    from .text_sources import TextPreferences

    # sys.argv stays as it is: DDP starts the other processes by running it again. So the
    # arguments after "embed" go in explicitly, and LightningCLI's note about that is moot.
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run.*")
    cli = MRMCLI(
        MetaRewardModel,
        EpisodicDataModule,
        args=argv[1:],
        run=False,
        save_config_callback=None,
        parser_class=OneLineErrorParser,
    )
    source = cli.datamodule.source
    if not isinstance(source, TextPreferences):
        raise ValueError(
            f"data.source is {type(source).__name__}, which has no text for mrm embed to "
            "encode (use a text source such as RedditTLDR)"
        )
    embed_source(source, cli.trainer)
