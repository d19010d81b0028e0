"""``mrm COMMAND ...``: one dispatch table from command name to the module that runs it.

Each command's module is imported only when that command runs, so ``mrm --help`` and the
argparse commands' ``--help`` start in well under a second; fit/validate/test/predict load
Lightning and the model (LightningCLI's own ``--help`` needs them).
"""

from __future__ import annotations

import os
import sys
import traceback
from importlib import import_module

from .errors import DEBUG_ENV, DEBUG_FLAG, debug_mode, fail, user_error_line

# command -> (module of mrm_lightning.cli that runs it, one line for ``mrm --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("train", "meta-train MRM, e.g. mrm fit --config configs/synthetic.yaml"),
    "validate": ("train", "validate a checkpoint (--ckpt_path) on validation users"),
    "test": ("train", "test a checkpoint (--ckpt_path) on held-out pairs"),
    "predict": ("train", "LightningCLI's predict loop"),
    "encoder-tune": (
        "encoder_tune",
        "stage 0: tune the text encoder into a reward model on training pairs",
    ),
    "embed": ("embed", "encode a config's texts into its embedding cache (sharded over devices)"),
    "adapt": ("use", "adapt a trained model to users from their pairs: profiles"),
    "score": ("use", "score candidate responses for a user (or the prior)"),
    "ask": ("ask", "choose the comparisons to ask a user next, most informative first"),
    "serve": ("serve", "serve a trained model over HTTP (OpenRLHF's reward-model API)"),
    "bench": ("bench", "MRM against its peers on one protocol: table and few-shot curve"),
    "diagnose": ("diagnose", "is personalization warranted? users' disagreement, before training"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: mrm COMMAND [options]   (mrm COMMAND --help for a command's options)\n\n"
        "Personalized reward models by meta-learning (MRM).\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n--debug anywhere shows tracebacks instead of one-line errors."
    )


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``mrm``): returns nothing, so the exit status is 0.

    ``args`` lets tests call it; None reads ``sys.argv`` (LightningCLI then reads it too, as
    DDP starts its other processes by running ``sys.argv`` again). Errors: :mod:`.errors`.
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
        dispatch(argv, from_sys_argv=args is None)
    except SystemExit as stop:  # argparse and the commands print their one line themselves
        if debug_mode() and isinstance(stop.__context__, Exception):
            traceback.print_exception(stop.__context__)
        raise
    except Exception as error:
        usage = getattr(error, "usage", None)  # a config mistake (training.lightning_cli)
        if debug_mode() and usage is not None:  # the whole usage, as jsonargparse shows it
            print(f"{usage}error: {error.problem}", file=sys.stderr)
            raise SystemExit(2) from error
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


def dispatch(argv: list[str], from_sys_argv: bool) -> None:
    """Run the command ``argv[0]`` with the rest of ``argv``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    command = argv[0]
    if command not in COMMANDS:
        fail(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)} (mrm --help)")
    module = import_module(f"{__package__}.{COMMANDS[command][0]}")
    module.run(command, argv[1:], from_sys_argv)
