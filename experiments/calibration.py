"""Calibration of MRM's preference probabilities on unseen users, over several seeds.

For each seed: train MRM on ``--config`` (data and training seeds move together, as in
``synthetic_seeds.py``), then adapt every validation user and every unseen test user on their
training pairs and predict each held-out pair, shown in a random order (a seeded coin: label 1
when the first shown is the one the user chose), two ways:

- point: ``sigmoid(margin)`` at the adapted weights;
- posterior: P(first preferred) integrated over the user's posterior (Laplace for gradient
  adaptation, at a prior precision from ``--prior-precisions``; exact categorical for
  posterior adaptation).

The prior precision and one temperature per way (``p -> sigmoid(logit(p) / T)``) are chosen
on validation users by NLL; unseen test users are only scored: ECE (10 equal-width bins),
Brier score, NLL and accuracy, before and after the temperature. Writes a JSON of every seed
and the mean +- std, and a reliability diagram PNG (the seeds' unseen test pairs pooled).

    python experiments/calibration.py --config configs/synthetic.yaml --seeds 0 1 2 \\
        --json runs/calibration/synthetic.json --png-dir runs/calibration
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from mrm_lightning.data.splits import TEST, TRAIN, VAL
from mrm_lightning.method.calibration import (
    binary_nll,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    temper,
)
from mrm_lightning.training.figures import save_panels
from mrm_lightning.training.lightning_cli import cli_main
from mrm_lightning.training.reliability import reliability_panel
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.user_uncertainty import posterior_kind

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeded_runs import pair_embeddings, seed_args  # noqa: E402 (beside this script)

REPO = Path(__file__).resolve().parents[1]
WAYS = ("point", "posterior", "point_calibrated", "posterior_calibrated")
METRICS = ("ece", "brier", "nll", "accuracy")


def train(seed: int, config: str, overrides: list[str], out: Path):
    """Fit MRM for one seed; the CLI (its data module) and the checkpoint chosen on
    validation."""
    cli = cli_main(
        [
            "fit", *seed_args(config, seed),
            "--test_after_fit", "false",
            "--trainer.logger.init_args.save_dir", str(out),
            "--trainer.enable_progress_bar", "false",
            *overrides,
        ]
    )  # fmt: skip
    return cli, cli.trainer.checkpoint_callback.best_model_path


def predictions(
    model: PersonalizedRewardModel,
    datamodule,
    users: list[int],
    held_out: dict,
    precisions: list[float],
    gen: torch.Generator,
) -> dict:
    """Labels ``[N]``, point probabilities ``[N]`` and posterior probabilities ``[N]`` per prior
    precision (one entry, None, for a categorical posterior; none without a posterior) of
    every held-out pair of ``users``, each shown in a random order."""
    train_pairs, shown = {}, {}
    for user in users:
        chosen, rejected = pair_embeddings(datamodule, datamodule.pairs_by_split[TRAIN][user])
        train_pairs[user] = {"chosen": chosen, "rejected": rejected}
        chosen, rejected = pair_embeddings(datamodule, held_out[user])
        flip = torch.rand(len(chosen), generator=gen) < 0.5  # [N]: rejected shown first
        first = torch.where(flip[:, None], rejected, chosen)
        second = torch.where(flip[:, None], chosen, rejected)
        shown[user] = (first, second, (~flip).long())
    kind = posterior_kind(model.inner_settings())
    grid = [] if kind is None else ([None] if kind == "categorical" else precisions)
    labels = torch.cat([shown[u][2] for u in users])
    point, posterior = [], {p: [] for p in grid}
    profiles = model.adapt_many(train_pairs)
    for user in users:
        first, second, _ = shown[user]
        margin = torch.tensor(model.score_embeddings(first, profiles[user])) - torch.tensor(
            model.score_embeddings(second, profiles[user])
        )
        point.append(torch.sigmoid(margin.double()))
    for precision in grid:
        if precision is not None:  # only the Laplace covariance depends on it
            model.prior_precision = precision
            profiles = model.adapt_many(train_pairs)
        for user in users:
            first, second, _ = shown[user]
            probs = model.win_probability_embeddings(first, second, profiles[user])
            posterior[precision].append(torch.tensor(probs, dtype=torch.float64))
    return {
        "labels": labels,
        "point": torch.cat(point),
        "posterior": {p: torch.cat(v) for p, v in posterior.items()},
        "kind": kind,
    }


def scores(probs: torch.Tensor, labels: torch.Tensor, num_bins: int) -> dict:
    return {
        "ece": expected_calibration_error(probs, labels, num_bins),
        "brier": brier_score(probs, labels),
        "nll": binary_nll(probs, labels),
        "accuracy": float(((probs > 0.5).long() == labels).double().mean()),
    }


def choose_on_validation(val: dict) -> dict:
    """Prior precision and temperatures of least validation NLL (the uncalibrated posterior's
    precision alone; the calibrated one's jointly with its temperature)."""
    y = val["labels"]
    chosen = {"temperature_point": fit_temperature(val["point"], y)}
    if not val["posterior"]:
        return chosen
    raw = {p: binary_nll(q, y) for p, q in val["posterior"].items()}
    tempered = {}
    for p, q in val["posterior"].items():
        t = fit_temperature(q, y)
        tempered[p] = (binary_nll(temper(q, t), y), t)
    best = min(tempered, key=lambda p: tempered[p][0])
    chosen.update(
        prior_precision=min(raw, key=raw.get),
        prior_precision_calibrated=best,
        temperature_posterior=tempered[best][1],
    )
    return chosen


def run_seed(seed: int, args, overrides: list[str]) -> tuple[dict, dict]:
    """One seed's record for the JSON, and its test predictions (for the diagram)."""
    gen = torch.Generator().manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        cli, path = train(seed, args.config, overrides, Path(tmp))
        model = PersonalizedRewardModel.from_checkpoint(path, device="cpu")
    # raw posterior probabilities: this script fits its own temperatures (the checkpoint's,
    # chosen by mrm fit on the same validation users, is recorded beside them)
    record_temperature, model.temperature = model.temperature, 1.0
    dm = cli.datamodule
    if not dm.has_validation_users:
        raise SystemExit("calibration.py: the config holds out no validation users: set "
                         "data.validation_users (e.g. --data.validation_users 0.2)")  # fmt: skip
    unseen = {int(u) for u in dm.split.unseen_users}
    val_users = dm.eval_users(VAL)
    test_users = [u for u in dm.eval_users(TEST) if u in unseen]
    grid = list(args.prior_precisions)
    val = predictions(model, dm, val_users, dm.held_out(VAL), grid, gen)
    test = predictions(model, dm, test_users, dm.held_out(TEST), grid, gen)
    chosen = choose_on_validation(val)
    y = test["labels"]
    probs = {
        "point": test["point"],
        "point_calibrated": temper(test["point"], chosen["temperature_point"]),
    }
    if test["posterior"]:
        probs["posterior"] = test["posterior"][chosen["prior_precision"]]
        q = test["posterior"][chosen["prior_precision_calibrated"]]
        probs["posterior_calibrated"] = temper(q, chosen["temperature_posterior"])
    record = {
        "seed": seed,
        "posterior_kind": test["kind"],
        **chosen,
        "checkpoint_temperature": record_temperature,  # what mrm fit chose, for comparison
        "validation": {"users": len(val_users), "pairs": len(val["labels"])},
        "test_unseen": {"users": len(test_users), "pairs": len(y)},
        "share_label_1": float(y.double().mean()),
        "metrics": {w: scores(p, y, args.bins) for w, p in probs.items()},
    }
    return record, {"labels": y, **probs}


def summary(records: list[dict]) -> dict:
    table = {}
    for way in WAYS:
        runs = [r["metrics"][way] for r in records if way in r["metrics"]]
        if runs:
            table[way] = {
                m: {
                    "mean": statistics.mean(run[m] for run in runs),
                    "std": statistics.stdev(run[m] for run in runs) if len(runs) > 1 else 0.0,
                    "seeds": len(runs),
                }
                for m in METRICS
            }
    return table


def diagram(pooled: dict, bins: int, name: str, path: Path) -> None:
    """Two panels, before and after the temperature: point (blue), posterior (orange)."""

    def curves(suffix: str) -> dict:
        ways = [way for way in ("point", "posterior") if way + suffix in pooled]
        return {way: (pooled[way + suffix], pooled["labels"]) for way in ways}

    save_panels(
        path,
        [
            reliability_panel(curves(""), f"{name}: before the temperature", bins),
            reliability_panel(curves("_calibrated"), f"{name}: after the temperature", bins),
        ],
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/synthetic.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=Path("runs/calibration/calibration.json"))
    parser.add_argument("--png-dir", type=Path, default=Path("runs/calibration"))
    parser.add_argument("--bins", type=int, default=10, help="equal-width ECE bins")
    parser.add_argument(
        "--prior-precisions", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0],
        help="the Laplace prior precisions validation chooses from",
    )  # fmt: skip
    args, overrides = parser.parse_known_args(argv)  # the rest is passed on to `mrm fit`
    warnings.filterwarnings("ignore")
    records, pooled = [], {}
    for seed in args.seeds:
        record, probs = run_seed(seed, args, overrides)
        records.append(record)
        for way, values in probs.items():
            pooled.setdefault(way, []).append(values)
        print(json.dumps(record))
    name = Path(args.config).stem
    result = {
        "config": args.config,
        "overrides": overrides,
        "seeds": args.seeds,
        "bins": args.bins,
        "prior_precision_grid": args.prior_precisions,
        "per_seed": records,
        "summary": summary(records),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    pooled = {way: torch.cat(v) for way, v in pooled.items() if len(v) == len(records)}
    diagram(pooled, args.bins, name, args.png_dir / f"reliability_{name}.png")
    print(f"\n{name}, unseen test users, {len(records)} seeds (mean ± std)")
    for way, row in result["summary"].items():
        cells = "  ".join(f"{m} {row[m]['mean']:.3f} ±{row[m]['std']:.3f}" for m in METRICS)
        print(f"{way:<22}{cells}")
    return result


if __name__ == "__main__":
    main()
