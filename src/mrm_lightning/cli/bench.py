"""``mrm bench``: MRM against its peers on one protocol (:mod:`mrm_lightning.bench.harness`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bench.methods import CONFIGS, DEFAULT_METHODS, METHODS
from ..training.configs import find_config
from .errors import ArgumentParser

DESCRIPTION = (
    "MRM against its peers on one protocol: each method is trained on each seed, chooses its "
    "checkpoint and settings on validation users, and is tested once; writes results.json, "
    "a table (results.md) and the few-shot curve (PNG). --config is the benchmarked run: its "
    "data section is every method's data, its model and trainer are MRM's; a peer's model "
    "and trainer come from PEERS_DIR/<method>.yaml. Further --data.* settings go to every "
    "method, e.g. the paths of a text source."
)


def parser() -> ArgumentParser:
    bench = ArgumentParser(prog="mrm bench", description=DESCRIPTION)
    bench.add_argument(
        "--config",
        type=lambda value: Path(find_config(value)),
        default=CONFIGS / "synthetic.yaml",
        help="the benchmarked run: a file, or the name of a shipped config (e.g. tiny)",
    )
    bench.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=METHODS,
        help="per_group (one model per group of a users file) only when named",
    )
    bench.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    bench.add_argument("--out", type=Path, required=True, help="folder for the results")
    bench.add_argument(
        "--max_epochs",
        type=int,
        default=None,
        help="override the training epochs of the trained methods (lore, pal, vpl, MRM); "
        "they then validate every min(5, N) epochs",
    )
    bench.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (the tensors are small: more threads mostly wait on each other)",
    )
    bench.add_argument(
        "--peers_dir", type=Path, default=CONFIGS / "peers", help="the peers' configs"
    )
    bench.add_argument(
        "--grid",
        type=lambda value: Path(find_config(value)),
        default=None,
        help="tune every method alike: a YAML file of method -> settings to try, the same "
        "number for each, chosen on validation users (e.g. peers/grids.yaml)",
    )
    return bench


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's settings; the ``--data.*`` ones in ``data_overrides``."""
    bench = parser()
    args, rest = bench.parse_known_args(argv)
    for flag in rest:
        if flag.startswith("--") and not flag.startswith("--data."):
            bench.error(f"{flag}: only --data.* settings are passed on to every method")
    args.data_overrides = rest
    return args


def run(command: str, argv: list[str], from_sys_argv: bool = False) -> None:
    main(argv)


def main(argv: list[str] | None = None) -> dict:
    """``mrm bench ARGS`` from Python: the results (what ``bench.report.write_results`` returns)."""
    args = parse(argv)  # before the heavy imports: --help and mistakes answer at once
    from ..bench.harness import run_benchmark

    return run_benchmark(args)
