"""``mrm encoder-tune --config C --out DIR``: stage 0, tune the text encoder into a reward model
on the seen users' training pairs (:mod:`mrm_lightning.training.reward_encoder`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .data_args import add_config_argument, config_cli, parse_with_data_overrides
from .errors import ArgumentParser

DESCRIPTION = (
    "Stage 0: fine-tune --config's text encoder with the pooled Bradley-Terry loss on the seen "
    "users' training pairs of its split (never a validation user's training pair, never a pair "
    "of a test unit), choose how long on the validation pairs, and save the chosen encoder as a "
    "Hugging Face model folder. Then embed with it and meta-train as usual, with "
    "--data.source.init_args.encoder.init_args.model DIR. The split is the config's: tune with "
    "the same --data.seed (and source seed) as the run that will use the encoder. Further "
    "--data.* settings go to the data module."
)


def parser() -> ArgumentParser:
    tune = ArgumentParser(prog="mrm encoder-tune", description=DESCRIPTION, allow_abbrev=False)
    add_config_argument(
        tune,
        help="a run's config with a text source (a file, or a shipped name such as sbic)",
    )
    tune.add_argument("--out", type=Path, required=True, help="folder for the tuned encoder")
    tune.add_argument("--epochs", type=int, default=2, help="passes over the training pairs")
    tune.add_argument(
        "--checks-per-epoch",
        type=int,
        default=2,
        help="validation checks an epoch; the best one's encoder is saved",
    )
    tune.add_argument("--batch-size", type=int, default=32, help="pairs a step")
    tune.add_argument("--lr", type=float, default=2e-5, help="the encoder's learning rate")
    tune.add_argument("--head-lr", type=float, default=1e-2, help="the scalar head's")
    tune.add_argument("--weight-decay", type=float, default=0.01)
    tune.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        help="0 tunes every weight (small encoders); r > 0 tunes rank-r LoRA adapters on every "
        "linear layer (peft) and merges them into the saved weights (large reward models)",
    )
    tune.add_argument("--lora-alpha", type=int, default=32)
    tune.add_argument("--seed", type=int, default=0, help="initialisation and pair order")
    tune.add_argument("--accelerator", default="auto", help="Lightning's: auto, cpu, gpu")
    tune.add_argument("--devices", default="1", help="Lightning's: 1, 2, auto (DDP over them)")
    tune.add_argument(
        "--precision",
        default="auto",
        help="Lightning's; auto is bf16-mixed on GPU and 32-true on CPU",
    )
    tune.add_argument(
        "--max-steps", type=int, default=-1, help="stop after this many steps (-1: no cap)"
    )
    return tune


def parse(argv: list[str]) -> argparse.Namespace:
    """The tuning's settings; the ``--data.*`` ones in ``data_overrides``."""
    return parse_with_data_overrides(parser(), argv)


def run(command: str, argv: list[str], from_sys_argv: bool = False) -> None:
    main(argv)


def main(argv: list[str]):
    """``mrm encoder-tune ARGS`` from Python: the :class:`TuningRecord` (also tuning.json)."""
    args = parse(argv)  # before the heavy imports: --help and mistakes answer at once

    import torch

    from ..data.tuning_pairs import tuning_pairs
    from ..training.reward_encoder import TuningSettings, tune_encoder

    settings = TuningSettings(
        epochs=args.epochs,
        checks_per_epoch=args.checks_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        weight_decay=args.weight_decay,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        seed=args.seed,
    )
    cli = config_cli(args, prog="mrm encoder-tune")
    pairs = tuning_pairs(cli.datamodule)  # refuses a source without texts
    source = cli.datamodule.source
    precision = args.precision
    if precision == "auto":
        gpu = args.accelerator in ("gpu", "cuda") or (
            args.accelerator == "auto" and torch.cuda.is_available()
        )
        precision = "bf16-mixed" if gpu else "32-true"
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    print(
        f"tuning {source.encoder.model_name or 'all-MiniLM-L6-v2'} on {pairs.train.num_pairs} "
        f"training pairs of {int(pairs.train.user.unique().numel())} seen users; "
        f"{pairs.validation.num_pairs} validation pairs choose the check",
        flush=True,
    )
    record = tune_encoder(
        source.encoder,
        pairs,
        settings,
        args.out,
        trainer_options={
            "accelerator": args.accelerator,
            "devices": devices,
            "precision": precision,
            "max_steps": args.max_steps,
        },
    )
    chosen = record.chosen
    print(
        f"chosen: step {chosen.step} (epoch {chosen.epoch:.2f}) of {len(record.checks)} checks, "
        f"validation pair accuracy {chosen.pair_accuracy:.3f}"
    )
    print(
        f"Tuned encoder: {args.out}\nUse it: --data.source.init_args.encoder.init_args.model "
        f"{args.out}"
    )
    return record
