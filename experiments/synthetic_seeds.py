"""The main synthetic job over several seeds: mean +- std of every row of the results table.

Each seed draws a new population, a new user split and new episodes (data and training seeds
move together). Any further arguments are passed to `mrm fit`, so variants are compared the
same way, e.g. the paper's softmax mixing against the default linear one:

    python experiments/synthetic_seeds.py --seeds 0 1 2
    python experiments/synthetic_seeds.py --seeds 0 1 2 --model.combination softmax
    python experiments/synthetic_seeds.py --config configs/semisynthetic.yaml   # real texts

Any config whose source takes a ``seed`` works (the synthetic and semi-synthetic populations).

Model selection happens on validation pairs (the checkpoint with the best val/user_acc);
the table shows that checkpoint's test accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path

from mrm_lightning.training.lightning_cli import fit_and_report
from mrm_lightning.training.report import personalization_summary

REPO = Path(__file__).resolve().parents[1]


def run_seed(seed: int, config: str, overrides: list[str], out: Path) -> dict:
    return fit_and_report(
        [
            "--config", config,
            "--seed_everything", str(seed),
            "--data.seed", str(seed),
            "--data.source.init_args.seed", str(seed),
            *overrides,
        ],
        out,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default=str(REPO / "configs/synthetic.yaml"))
    args, overrides = parser.parse_known_args(argv)
    warnings.filterwarnings("ignore")
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_seed(seed, args.config, overrides, Path(tmp)))
    rows = runs[0]["user_level_accuracy"]
    print(f"\n{len(runs)} seeds {args.seeds}; overrides: {' '.join(overrides) or 'none'}")
    print(f"{'user-level accuracy (test)':<28}{'seen':>15}{'unseen':>15}{'overall':>15}")
    for name in rows:
        cells = ""
        for column in ("seen", "unseen", "overall"):
            values = [run["user_level_accuracy"][name][column] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells += f"{statistics.mean(values):>9.3f} ±{spread:.3f}"
        print(f"{name:<28}{cells}")
    gaps = [run["unseen_gap_closed"] for run in runs if "unseen_gap_closed" in run]
    if gaps:
        print(f"unseen gap closed: {', '.join(f'{g:.2f}' for g in gaps)} (min {min(gaps):.2f})")
    vals = [run["val_user_acc"] for run in runs]
    print("val/user_acc of the selected checkpoints: " + ", ".join(f"{v:.3f}" for v in vals))
    print("\n".join(personalization_summary(runs)))


if __name__ == "__main__":
    main()
