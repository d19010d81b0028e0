"""MRM on a real slice of Reddit TL;DR comparisons, next to a global reward model.

    python experiments/tldr_slice.py ../shared/data/tldr            # every *.jsonl in the folder
    python experiments/tldr_slice.py ../shared/data/tldr --grid model.inner_lr=0,3,30 \
        model.input_scale=1,10

Protocol (as measured in the method notes): workers with >= 20 comparisons, split 50/50 into
seen and unseen users; each worker's comparisons split by post (a post never on two sides)
into train / validation / test (60/10/30); training pairs capped at 150 (seen) and 50
(unseen); all-MiniLM-L6-v2 embeddings, computed once and cached.

Every setting in the grid is trained on every seed; the ONE setting with the best mean
validation user-level accuracy over the seeds is reported. Inside each run, `mrm fit` also
chooses the adaptation strength on validation (0 times the inner lr, no adaptation, is always a
candidate), so the selection can always fall back to MRM's prior, which starts as the global
model (warm start). Test pairs never inform a choice.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import warnings
from pathlib import Path

from mrm_lightning.training.lightning_cli import fit_and_report
from mrm_lightning.training.report import personalization_summary

REPO = Path(__file__).resolve().parents[1]
ROWS = ("MRM (adapted)", "MRM w0, no adaptation", "global reward model")


def fit(
    files: list[str], seed: int, overrides: list[str], args: argparse.Namespace, out: Path
) -> dict:
    return fit_and_report(
        [
            "--config", str(REPO / "configs/tldr.yaml"),
            "--data.source.init_args.paths", json.dumps(files),
            "--data.source.init_args.cache_dir", args.cache_dir,
            "--data.source.init_args.progress", "false",
            "--data.use_given_split", "false",
            "--data.test_fraction", "0.3",
            "--data.val_fraction", "0.1",
            "--data.min_pairs_per_user", "20",
            *(["--data.support_size", args.support_size] if args.support_size else []),
            "--trainer.max_epochs", str(args.epochs),
            "--seed_everything", str(seed),
            "--data.seed", str(seed),
            *overrides,
        ],
        out,
    )  # fmt: skip


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ±{spread:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder of TL;DR JSON-lines batch files, or one file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--grid",
        nargs="+",
        default=["model.inner_lr=0.3,1,3"],
        help="settings to compare, each KEY=V1,V2,... (a `mrm fit` flag)",
    )
    parser.add_argument("--support-size", default=None, help="default: the config's")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--cache-dir", default=str(REPO / ".cache/mrm-embeddings"))
    args = parser.parse_args(argv)
    data = Path(args.data)
    files = sorted(str(p) for p in data.glob("*.jsonl")) if data.is_dir() else [str(data)]
    warnings.filterwarnings("ignore")
    axes = [(key, values.split(",")) for key, values in (g.split("=", 1) for g in args.grid)]
    results: dict[tuple, list[dict]] = {}
    for values in itertools.product(*[v for _, v in axes]):
        overrides = [x for (key, _), v in zip(axes, values) for x in (f"--{key}", v)]
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                results.setdefault(values, []).append(fit(files, seed, overrides, args, Path(tmp)))
        vals = [r["val_user_acc"] for r in results[values]]
        print(
            f"{dict(zip([k for k, _ in axes], values))}: val/user_acc {mean_std(vals)}", flush=True
        )
    best = max(results, key=lambda v: statistics.mean(r["val_user_acc"] for r in results[v]))
    chosen = results[best]
    print(f"selected on validation: {dict(zip([k for k, _ in axes], best))}")
    print(
        f"\nReddit TL;DR slice ({', '.join(Path(f).name for f in files)}); "
        f"{len(args.seeds)} seeds; test user-level accuracy, mean ± std over seeds"
    )
    print(f"{'':<24}{'seen':>15}{'unseen':>15}{'overall':>15}")
    for row in ROWS:
        cells = "".join(
            f"{mean_std([r['user_level_accuracy'][row][c] for r in chosen]):>15}"
            for c in ("seen", "unseen", "overall")
        )
        print(f"{row:<24}{cells}")
    print("\n".join(personalization_summary(chosen)))


if __name__ == "__main__":
    main()
