"""Stage 0 measured: the frozen encoder against one tuned for preference, global vs MRM, per seed.

    python experiments/stage0.py --config configs/sbic.yaml --seeds 0 1 2 --epochs 1 \
        --checks-per-epoch 3 \
        --out runs/stage0/sbic   [--data.* overrides, as for mrm bench]

For each seed: ``mrm encoder-tune`` on that seed's split (the seen users' training pairs;
the check chosen on the validation pairs), then ``mrm bench --methods global mrm`` on the same
seed twice, with the frozen and with the tuned encoder. A seed's split is the same in all three
(``data.seed``, and the source's own seed where it has one, follow the seed), so the tuned
encoder never saw a pair of that seed's test units. Prints and writes OUT/stage0.md and
OUT/stage0.json: unseen and seen users' accuracy on held-out pairs, mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import yaml

from mrm_lightning.cli import main as mrm

ENCODER = "--data.source.init_args.encoder.init_args.model"


def source_has_seed(config: str) -> bool:
    source = yaml.safe_load(Path(config).read_text())["data"]["source"]
    return "seed" in source.get("init_args", {})


def mean_std(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--checks-per-epoch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max_epochs", type=int, default=None, help="mrm bench's (a smoke run)")
    args, data_overrides = parser.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"config": args.config, "seeds": args.seeds, "data": data_overrides}
    results["tuning"], rows = {}, {}
    for seed in args.seeds:
        split = ["--data.seed", str(seed)]
        if source_has_seed(args.config):
            split += ["--data.source.init_args.seed", str(seed)]
        encoder = args.out / f"encoder-seed{seed}"
        started = time.perf_counter()
        mrm(
            ["encoder-tune", "--config", args.config, *split, *data_overrides]
            + ["--out", str(encoder), "--epochs", str(args.epochs), "--seed", str(seed)]
            + ["--lr", str(args.lr), "--batch-size", str(args.batch_size)]
            + ["--checks-per-epoch", str(args.checks_per_epoch)]
        )
        record = json.loads((encoder / "tuning.json").read_text())
        record["seconds"] = round(time.perf_counter() - started, 1)
        results["tuning"][seed] = record
        for name, extra in (("frozen", []), ("tuned", [ENCODER, str(encoder)])):
            out = args.out / f"{name}-seed{seed}"
            mrm(
                ["bench", "--config", args.config, "--methods", "global", "mrm"]
                + ["--seeds", str(seed), "--out", str(out), *data_overrides, *extra]
                + (["--max_epochs", str(args.max_epochs)] if args.max_epochs else [])
            )
            for run in json.loads((out / "results.json").read_text())["runs"]:
                for part in ("unseen", "seen"):
                    rows.setdefault((name, run["method"], part), []).append(run[part])
    results["accuracy"] = {" ".join(key): mean_std(values) for key, values in rows.items()}
    lines = [
        f"Stage 0 on {args.config}, seeds {args.seeds} (held-out pairs, mean ± std over seeds)",
        "",
        "| encoder | method | unseen users | seen users |",
        "|---|---|---|---|",
    ]
    for name in ("frozen", "tuned"):
        for method in ("global", "mrm"):
            cells = [results["accuracy"][f"{name} {method} {p}"] for p in ("unseen", "seen")]
            text = [f"{c['mean']:.3f} ± {c['std']:.3f}" for c in cells]
            lines.append(f"| {name} | {method} | {text[0]} | {text[1]} |")
    lines.append("")
    for seed, record in results["tuning"].items():
        chosen = record["chosen"]
        lines.append(
            f"seed {seed}: tuned on {record['train_pairs']} pairs of {record['train_users']} "
            f"users, check at epoch {chosen['epoch']:.2f} chosen on {record['validation_pairs']} "
            f"validation pairs (accuracy {chosen['pair_accuracy']:.3f}), {record['seconds']:.0f} s"
        )
    (args.out / "stage0.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "stage0.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
