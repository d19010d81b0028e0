"""``mrm diagnose --config C``: is personalization warranted on this data, before any training
(:mod:`mrm_lightning.bench.diagnosis`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .data_args import add_config_argument, config_cli, parse_with_data_overrides
from .errors import ArgumentParser

DESCRIPTION = (
    "Is personalization warranted here? From the training split of --config's data (held out "
    "within it, by unit): users and pairs; the consensus ceiling (how often the other users' "
    "consensus orders a user's held-out pairs: the best any one shared reward model could do); "
    "whether a user's own judgements predict their held-out pairs better than the shared "
    "predictor, with a permutation test; per group where a users file is given; and a verdict. "
    "Prints the figures, writes diagnose.json and diagnose.png. Further --data.* settings go "
    "to the data module, e.g. --data.source.init_args.paths '[ratings.csv]'."
)


def parser() -> ArgumentParser:
    diagnose = ArgumentParser(prog="mrm diagnose", description=DESCRIPTION, allow_abbrev=False)
    add_config_argument(
        diagnose,
        help="a run's config (a file, or a shipped name such as synthetic); repeat to stack",
    )
    diagnose.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for diagnose.json and diagnose.png (default: runs/diagnose/NAME, NAME the "
        "config's logger name, plus -shuffled-HOW with --shuffle-users)",
    )
    diagnose.add_argument(
        "--holdout", type=float, default=0.5, help="share of the training units held out"
    )
    diagnose.add_argument(
        "--test",
        choices=("auto", "items", "model"),
        default="auto",
        help="items: other users' votes weighted by agreement with the user, against their "
        "consensus (needs pairs several users judged); model: per-user corrections of a global "
        "Bradley-Terry model, against it; auto: items where most pairs were judged by others",
    )
    diagnose.add_argument(
        "--permutations", type=int, default=200, help="at least 200 for p < 0.005"
    )
    diagnose.add_argument(
        "--seed", type=int, default=0, help="the held-out cut, shuffles, permutations"
    )
    diagnose.add_argument(
        "--shuffle-users",
        choices=("none", "pairs", "units"),
        default="none",
        help="a check: shuffle user ids across pairs, or within units (items several users "
        "judged), before diagnosing; the verdict should then be 'no evidence'",
    )
    diagnose.add_argument("--groups", default=None, help="a users CSV, e.g. annotators.csv")
    diagnose.add_argument("--group-by", default=None, help="its column naming a user's group")
    diagnose.add_argument("--user-column", default="user_id", help="its column of user ids")
    diagnose.add_argument("--alpha", type=float, default=0.05, help="'users differ' when p < this")
    diagnose.add_argument(
        "--ranks",
        type=int,
        nargs="+",
        default=[8, 32],
        help="model test: directions a user's own correction may use",
    )
    diagnose.add_argument(
        "--l2",
        type=float,
        nargs="+",
        default=[0.1, 1.0],
        help="model test: L2 of a user's own correction",
    )
    return diagnose


def parse(argv: list[str]) -> argparse.Namespace:
    """The diagnosis's settings; the ``--data.*`` ones in ``data_overrides``."""
    return parse_with_data_overrides(parser(), argv)


def run(command: str, argv: list[str], from_sys_argv: bool = False) -> None:
    main(argv)


def main(argv: list[str]) -> dict:
    """``mrm diagnose ARGS`` from Python: every figure (what diagnose.json holds)."""
    args = parse(argv)  # before the heavy imports: --help and mistakes answer at once

    from ..bench.diagnosis import DiagnoseSettings, diagnose
    from ..bench.diagnosis_report import summary_lines, write_outputs
    from ..bench.disagreement import TestSettings

    started = time.perf_counter()
    cli = config_cli(args, prog="mrm diagnose")
    datamodule = cli.datamodule
    datamodule.prepare_data()
    datamodule.setup()
    settings = DiagnoseSettings(
        holdout=args.holdout,
        test=args.test,
        shuffle_users=args.shuffle_users,
        groups=args.groups,
        group_by=args.group_by,
        user_column=args.user_column,
        alpha=args.alpha,
        seed=args.seed,
        test_settings=TestSettings(
            permutations=args.permutations,
            seed=args.seed,
            ranks=tuple(args.ranks),
            l2_grid=tuple(args.l2),
        ),
    )
    figures = diagnose(datamodule, settings)
    out = args.out or default_out(cli.trainer, args.shuffle_users)
    figures["command"] = {"config": args.config, "data_overrides": args.data_overrides}
    figures["seconds"] = round(time.perf_counter() - started, 1)
    json_path, png_path = write_outputs(figures, out)
    print("\n".join(summary_lines(figures)))
    print(f"figures: {json_path}, {png_path} ({figures['seconds']:.0f} s)")
    return figures


def default_out(trainer, shuffle: str) -> Path:
    """runs/diagnose/NAME, NAME the config's logger name (runs/diagnose without a logger)."""
    logger = trainer.logger
    root = Path(getattr(logger, "save_dir", None) or "runs") / "diagnose"
    name = getattr(logger, "name", None) or "data"
    return root / (name if shuffle == "none" else f"{name}-shuffled-{shuffle}")
