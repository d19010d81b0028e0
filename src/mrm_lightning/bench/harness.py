"""MRM against its peers on one protocol: train each method on each seed, test once, write a
table and the few-shot curve.

    python experiments/benchmark.py --config configs/synthetic.yaml \
        --methods global per_user finetune lore pal vpl mrm mrm_rpo --seeds 0 1 2 --out DIR
    mrm bench ...   (the same)

``--config`` is the benchmarked run: its ``data`` section is every method's data (the same
users, splits and pairs per seed), and its model and trainer are MRM's. A peer's model and
trainer come from ``configs/peers/<method>.yaml``; ``mrm`` is the config without the RPO
callback (``configs/peers/mrm_no_rpo.yaml``), ``mrm_rpo`` the config as it is. Every method
chooses its checkpoint and settings on validation users only and is tested once; the few-shot
curve then re-tests the selected model with each user's support cut to n pairs (a seeded
subset, no retraining). Further ``--data.*`` arguments go to every method, e.g. the paths of
a text source.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader

from ..data.datamodule import EpisodicDataModule
from ..training.lightning_cli import MRMCLI, OneLineErrorParser, quiet_known_noise
from ..training.module import MetaRewardModel
from .grids import Settings, read_grid, setting_args
from .methods import METHODS, PEERS, SHOTS
from .protocol import TruncatedSupport, worst_fraction_mean
from .report import write_results


class PeerCLI(LightningCLI):
    """A peer (``model.class_path``) on the episodic data module, embedding size linked."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments(
            "data.embedding_dim", "model.init_args.embedding_dim", apply_on="instantiate"
        )


def method_args(method: str, config: Path, data_config: Path, peers_dir: Path) -> list[str]:
    """The config files of ``method``: a peer's own config plus the data section, or MRM's."""
    if method in PEERS:
        return ["--config", str(peers_dir / f"{method}.yaml"), "--config", str(data_config)]
    if method == "mrm":
        return ["--config", str(config), "--config", str(peers_dir / "mrm_no_rpo.yaml")]
    if method == "mrm_rpo":
        return ["--config", str(config)]
    raise ValueError(f"unknown method {method!r}; choose among {', '.join(METHODS)}")


def build(method: str, args: list[str]) -> LightningCLI:
    """Instantiate (without running) the model, data module and trainer of one run."""
    common = dict(args=args, run=False, save_config_kwargs={"overwrite": True})
    if method in PEERS:
        return PeerCLI(
            LightningModule,
            EpisodicDataModule,
            subclass_mode_model=True,
            parser_class=OneLineErrorParser,
            **common,
        )
    return MRMCLI(MetaRewardModel, EpisodicDataModule, parser_class=OneLineErrorParser, **common)


def per_user_unseen(model: LightningModule):
    values = model.test_user_accuracy["unseen"]
    return values[0] if isinstance(values, tuple) else values  # MRM keeps (adapted, w0)


def shots_curve(model: LightningModule, datamodule, seed: int) -> dict[str, float]:
    """Unseen-user test accuracy with each user's support cut to n pairs, n in SHOTS."""
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    curve = {}
    for shots in SHOTS:
        batches = TruncatedSupport(datamodule.test_dataloader(), shots, seed)
        trainer.test(model, dataloaders=DataLoader(batches, batch_size=None), verbose=False)
        curve[str(shots)] = float(trainer.callback_metrics["test_unseen/user_acc"])
    return curve


def fit_one(
    method: str, seed: int, args: argparse.Namespace, data_config: Path, settings: Settings
) -> tuple[LightningCLI, float]:
    """Fit ``method`` on ``seed`` with ``settings`` on top of its config, choosing its
    checkpoint on validation; the CLI (model, data module, trainer) and the seconds taken."""
    overrides = ["--seed_everything", str(seed), "--data.seed", str(seed)]
    if args.source_seed:
        overrides += ["--data.source.init_args.seed", str(seed)]
    overrides += [
        "--trainer.logger.init_args.save_dir", str(args.out / "runs"),
        "--trainer.logger.init_args.name", method,
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    if args.max_epochs is not None and method in ("lore", "pal", "vpl", "mrm", "mrm_rpo"):
        # validation every 5 epochs as in the configs, or at the end of a shorter run
        every = max(1, min(5, args.max_epochs))
        overrides += ["--trainer.max_epochs", str(args.max_epochs)]
        overrides += ["--trainer.check_val_every_n_epoch", str(every)]
    config_args = method_args(method, args.config, data_config, args.peers_dir)
    cli = build(method, [*config_args, *setting_args(settings), *args.data_overrides, *overrides])
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, time.perf_counter() - start


def test_one(method: str, seed: int, cli: LightningCLI, train_s: float) -> dict:
    """Test the checkpoint chosen on validation once, then the few-shot curve."""
    model, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    start = time.perf_counter()
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    tested = time.perf_counter()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    record = {
        "method": method,
        "seed": seed,
        "seen": metrics["test_seen/user_acc"],
        "unseen": metrics["test_unseen/user_acc"],
        "overall": metrics["test/user_acc"],
        "worst10_unseen": worst_fraction_mean(per_user_unseen(model), 0.1),
        "val_user_acc": float(model.selected_val_accuracy),
        "train_s": train_s,
        "eval_s": tested - start,
        "checkpoint": best,
    }
    record["shots_unseen"] = {**shots_curve(model, datamodule, seed), "all": record["unseen"]}
    return record


def run_one(
    method: str,
    seed: int,
    args: argparse.Namespace,
    data_config: Path,
    grid: list[Settings] | None = None,
) -> dict:
    """Fit each of the method's ``grid`` settings (none: its config as it is), keep the one
    best on validation users (the first of a tie), and test only that one."""
    tried, best, train_s = [], None, 0.0
    for settings in grid or [{}]:
        cli, seconds = fit_one(method, seed, args, data_config, settings)
        train_s += seconds
        score = float(cli.model.selected_val_accuracy)
        tried.append({"settings": settings, "val_user_acc": score})
        if best is None or score > best[0]:
            best = (score, settings, cli)  # the others are dropped: one model in memory
    _, settings, cli = best
    record = test_one(method, seed, cli, train_s)
    if grid:
        record["settings"], record["grid"] = settings, tried
    return record


def run_benchmark(args: argparse.Namespace) -> dict:
    """Every method on every seed (``args``: :func:`mrm_lightning.cli.bench.parser`'s), then
    the results files; returns what :func:`~mrm_lightning.bench.report.write_results` does."""
    quiet_known_noise()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(args.config.read_text())
    data = base["data"]
    # the source's own seed moves with the run's seed where it has one (synthetic sources)
    source_args = data.get("source", {}).get("init_args", {}) if isinstance(data, dict) else {}
    args.source_seed = "seed" in source_args
    data_config = args.out / "data.yaml"  # the data every method shares, kept with results
    data_config.write_text(yaml.safe_dump({"data": data}, sort_keys=False))
    warnings.filterwarnings("ignore")
    grids = read_grid(args.grid, args.methods) if args.grid else {}
    records = []
    for method in args.methods:
        for seed in args.seeds:
            records.append(run_one(method, seed, args, data_config, grids.get(method)))
            print(
                f"{method} seed {seed}: unseen {records[-1]['unseen']:.3f}, worst 10% "
                f"{records[-1]['worst10_unseen']:.3f} ({records[-1]['train_s']:.0f} s)"
            )
    return write_results(records, args)
