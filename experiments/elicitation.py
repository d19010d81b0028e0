"""Active questions: how fast do unseen users' profiles improve when MRM picks the questions?

Simulated questioning of the unseen test users of a trained model. For each seed, MRM is
trained (``mrm fit --config C --seed_everything S``; a checkpoint already under ``--out`` for
that seed is reused). Each unseen user's candidate questions are their own training pairs; the
simulated user answers exactly their recorded label. Candidates are shown to the chooser in a
random orientation, so the order of a pair never leaks its label; the answered pair is then
adapted on as recorded (chosen over rejected). After n = 1, 2, 4, 8, 16 answers (at most the
user's pool), the user is adapted on their answers and scored on their held-out test pairs.

Strategies: ``active`` asks :meth:`PersonalizedRewardModel.next_pairs` for the one most
informative remaining pair given the answers so far (re-adapting after each answer);
``random`` asks the pool in a random order. ``prior`` (no answers) and ``all`` (the whole
pool, what the test table reports) frame the curves, and ``oracle`` is the true rewards'
accuracy where the data set knows them (a ceiling, the same for every n).

    python experiments/elicitation.py --config configs/synthetic.yaml --seeds 0 1 2 \
        --json runs/elicitation/synthetic.json --png runs/elicitation/synthetic.png

Further arguments go to ``mrm fit`` (e.g. ``--trainer.max_epochs 20``); they are printed and
recorded in the JSON. ``--time-choice`` also times choosing 1 of 1,000 candidates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from mrm_lightning.bench.report import plot_shots
from mrm_lightning.data.splits import TEST, TRAIN
from mrm_lightning.training.lightning_cli import cli_main
from mrm_lightning.use.inference import PersonalizedRewardModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeded_runs import pair_embeddings, seed_args  # noqa: E402 (beside this script)

REPO = Path(__file__).resolve().parents[1]
ANSWERS = (1, 2, 4, 8, 16)
STRATEGIES = ("active", "random")


def fit_args(config: str, seed: int, overrides: list[str]) -> list[str]:
    """The ``mrm fit`` arguments of one seed (data and training seeds move together)."""
    return [
        *seed_args(config, seed),
        "--test_after_fit", "true",  # the test table: its unseen row checks the whole pool's
        *overrides,
    ]  # fmt: skip


def train_or_reuse(args: list[str], run_dir: Path) -> tuple[Path, dict]:
    """The selected checkpoint and ``results.json`` of a run under ``run_dir``, training first
    where there is none (ModelCheckpoint keeps the one best ``epoch=*.ckpt``)."""
    found = sorted(run_dir.rglob("checkpoints/epoch=*.ckpt"))
    results = sorted(run_dir.rglob("results.json"))
    if len(found) != 1 or not results:
        cli_main(
            ["fit", *args, "--trainer.logger.init_args.save_dir", str(run_dir),
             "--trainer.enable_progress_bar", "false"]
        )  # fmt: skip
        found = sorted(run_dir.rglob("checkpoints/epoch=*.ckpt"))
        results = sorted(run_dir.rglob("results.json"))
    return found[-1], json.loads(results[-1].read_text())


def datamodule_of(args: list[str]):
    """The run's data module, rebuilt from its settings (the same split: the seeds fix it)."""
    datamodule = cli_main(args, run=False).datamodule
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def user_pairs(datamodule, part: int, user: int) -> dict[str, torch.Tensor]:
    chosen, rejected = pair_embeddings(datamodule, datamodule.pairs_by_split[part][user])
    return {"chosen": chosen, "rejected": rejected}


def take(pairs: dict, rows: list[int]) -> dict:
    index = torch.tensor(rows, dtype=torch.long)
    return {side: pairs[side][index] for side in ("chosen", "rejected")}


def accuracy(model: PersonalizedRewardModel, pairs: dict, profile) -> float:
    """The share of ``pairs`` the profile ranks as recorded (ties count as wrong)."""
    chosen = torch.tensor(model.score_embeddings(pairs["chosen"], profile))
    rejected = torch.tensor(model.score_embeddings(pairs["rejected"], profile))
    return float((chosen > rejected).float().mean())


def mean_accuracy(model, pools: dict, tests: dict, orders: dict, count: int | None) -> float:
    """Mean over users of test accuracy after adapting on the first ``count`` answers of each
    user's order (None: the whole pool; 0: none, the prior)."""
    if count == 0:
        return statistics.mean(accuracy(model, tests[u], None) for u in tests)
    answered = {u: take(pools[u], orders[u][:count]) for u in tests}
    profiles = model.adapt_many(answered)
    return statistics.mean(accuracy(model, tests[u], profiles[u]) for u in tests)


def active_orders(model, pools: dict, gen: torch.Generator, most: int) -> dict[str, list[int]]:
    """Each user's first ``most`` questions chosen by ``next_pairs``, one at a time, re-adapting
    on the answers so far (all users adapted, and their next questions chosen, together)."""
    shown = {}  # the candidates in a random orientation: next_pairs never sees the label
    for user, pool in pools.items():
        flip = torch.rand(len(pool["chosen"]), generator=gen) < 0.5
        first = torch.where(flip[:, None], pool["rejected"], pool["chosen"])
        second = torch.where(flip[:, None], pool["chosen"], pool["rejected"])
        shown[user] = {"chosen": first, "rejected": second}
    orders: dict[str, list[int]] = {user: [] for user in pools}
    for step in range(most):
        asking = [u for u in pools if len(orders[u]) < len(pools[u]["chosen"])]
        if not asking:
            break
        profiles = (
            {u: None for u in asking}
            if step == 0
            else model.adapt_many({u: take(pools[u], orders[u]) for u in asking})
        )  # adapted on the answers as recorded
        remaining = {
            u: [i for i in range(len(pools[u]["chosen"])) if i not in orders[u]] for u in asking
        }
        picks = model.next_pairs_many(  # every user's next question in one batched choice
            {u: (profiles[u], take(shown[u], remaining[u]), ()) for u in asking}, k=1
        )
        for user in asking:
            assert len(picks[user]) == 1, (user, picks[user])
            question = remaining[user][picks[user][0]]
            assert question not in orders[user], "a pair was asked twice"
            orders[user].append(question)
    return orders


def elicit(model, datamodule, seed: int) -> dict[str, dict[str, float]]:
    """Mean unseen-user test accuracy per strategy and number of answers, for one seed."""
    train, test = datamodule.pairs_by_split[TRAIN], datamodule.pairs_by_split[TEST]
    users = [
        int(u) for u in datamodule.split.unseen_users if len(train[int(u)]) and len(test[int(u)])
    ]
    pools = {str(u): user_pairs(datamodule, TRAIN, u) for u in users}
    tests = {str(u): user_pairs(datamodule, TEST, u) for u in users}
    gen = torch.Generator().manual_seed(seed)
    shuffled = {
        u: torch.randperm(len(p["chosen"]), generator=gen).tolist() for u, p in pools.items()
    }
    orders = {"random": shuffled, "active": active_orders(model, pools, gen, max(ANSWERS))}
    curves = {
        name: {str(n): mean_accuracy(model, pools, tests, order, n) for n in ANSWERS}
        for name, order in orders.items()
    }
    curves["prior"] = {"0": mean_accuracy(model, pools, tests, orders["random"], 0)}
    curves["all"] = {"all": mean_accuracy(model, pools, tests, orders["random"], None)}
    sizes = [len(p["chosen"]) for p in pools.values()]
    curves["users"] = {"count": len(users), "min_pool": min(sizes), "max_pool": max(sizes)}
    return curves


def time_choice(model, datamodule, candidates: int = 1000, repeats: int = 50) -> float:
    """Median milliseconds of ``next_pairs`` choosing 1 of ``candidates`` pairs for one user
    (a profile adapted on 8 pairs; candidates drawn from the data's embeddings)."""
    data, gen = datamodule.data, torch.Generator().manual_seed(0)
    rows = torch.randint(len(data.embeddings), (2, candidates), generator=gen)
    pool = {
        "chosen": data.embeddings[rows[0]].float(),
        "rejected": data.embeddings[rows[1]].float(),
    }
    profile = model.adapt(take(pool, list(range(8))))
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        model.next_pairs(profile, pool, k=1)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[3:])  # the first calls warm up


def summarise(per_seed: dict[str, dict]) -> dict:
    """Mean and std over seeds of every point of every curve."""
    runs = list(per_seed.values())
    summary = {}
    for name in (*STRATEGIES, "prior", "all", "oracle"):
        if not all(name in run for run in runs):
            continue
        summary[name] = {}
        for point in runs[0][name]:
            values = [run[name][point] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[name][point] = {"mean": statistics.mean(values), "std": spread}
    return summary


def payload_table(per_seed: dict) -> str:
    return ", ".join(f"{run['test_table_unseen']:.3f}" for run in per_seed.values())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/synthetic.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--out", default=str(REPO / "runs/elicitation"), help="runs and checkpoints"
    )
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--png", default=None, help="draw the curves here")
    parser.add_argument("--time-choice", action="store_true", help="time 1-of-1,000 choices")
    args, overrides = parser.parse_known_args(argv)
    warnings.filterwarnings("ignore")
    name = Path(args.config).stem
    per_seed, commands, timing = {}, [], None
    for seed in args.seeds:
        fit = fit_args(args.config, seed, overrides)
        run_dir = Path(args.out) / name / f"seed_{seed}"
        commands.append(
            "mrm fit " + " ".join(fit) + f" --trainer.logger.init_args.save_dir {run_dir}"
        )
        checkpoint, results = train_or_reuse(fit, run_dir)
        model = PersonalizedRewardModel.from_checkpoint(checkpoint, device="cpu")
        if model.uses_warm_start:
            raise SystemExit(
                f"seed {seed}: validation chose the global model (no adaptation), so no "
                "answer changes a profile; pass --model.warm_start false to measure anyway"
            )
        datamodule = datamodule_of(fit)
        curves = elicit(model, datamodule, seed)
        oracle = results["user_level_accuracy"].get("oracle (true rewards)")
        if oracle is not None:
            curves["oracle"] = {"ceiling": oracle["unseen"]}
        # the whole pool is what the test table scored: the same users, pairs and adaptation
        curves["test_table_unseen"] = results["user_level_accuracy"]["MRM (adapted)"]["unseen"]
        curves["checkpoint"] = str(checkpoint)
        per_seed[str(seed)] = curves
        if args.time_choice and timing is None:
            timing = time_choice(model, datamodule)
        print(f"seed {seed}: " + json.dumps({k: curves[k] for k in (*STRATEGIES, "prior", "all")}))
    summary = summarise(per_seed)
    payload = {
        **{key: {p: v["mean"] for p, v in points.items()} for key, points in summary.items()},
        "std": {key: {p: v["std"] for p, v in points.items()} for key, points in summary.items()},
        "per_seed": per_seed,
        "config": args.config,
        "seeds": args.seeds,
        "overrides": overrides,
        "commands": commands,
        "next_pairs_1_of_1000_ms": timing,
    }
    print(
        f"\n{len(args.seeds)} seeds {args.seeds}, {name}; "
        f"overrides: {' '.join(overrides) or 'none'}"
    )
    print(f"{'answers':<9}" + "".join(f"{s:>18}" for s in STRATEGIES))
    for n in map(str, ANSWERS):
        cells = "".join(
            f"{summary[s][n]['mean']:>10.3f} ±{summary[s][n]['std']:.3f}" for s in STRATEGIES
        )
        print(f"{n:<9}{cells}")
    print(f"test table's unseen MRM accuracy: {payload_table(per_seed)}")
    for key, label in (
        ("prior", "no answers (prior)"),
        ("all", "whole pool"),
        ("oracle", "oracle"),
    ):
        if key in summary:
            point = next(iter(summary[key].values()))
            print(f"{label:<20}{point['mean']:.3f} ±{point['std']:.3f}")
    if timing is not None:
        print(f"next_pairs, 1 of 1,000 candidates: {timing:.2f} ms (median, CPU)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if args.png:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        shots = {s: {"shots_unseen": summary[s]} for s in STRATEGIES}
        plot_shots(shots, Path(args.png), title=f"Unseen users answering questions, {name}",
                   xlabel="questions answered")  # fmt: skip
    return payload


if __name__ == "__main__":
    main()
