"""How much of the semi-synthetic benchmark's global-to-oracle gap can be closed at all?

    python experiments/semisynthetic_ceiling.py --seeds 0 1 2

MRM is judged on unseen users by the share of the gap between the global model and the oracle
(the true rewards) that it closes. The oracle knows each user's individual direction and needs
no data; a method has at most ``max_train_pairs_unseen`` noisy labels per user. This script
scores, on exactly the split and test pairs MRM is scored on (``configs/semisynthetic.yaml``),
estimators that are GIVEN the planted structure, to say what a few pairs allow:

- type known: the mean reward of the user's type (no individual deviation, no data needed);
- likeliest type: the type whose mean reward best explains the user's training pairs
  (Bradley-Terry likelihood), then that type's reward;
- fitted weights: a Bradley-Terry fit of weights over the true type rewards (one feature per
  type), L2 0.01, on the user's training pairs.

They use knowledge no method has (the true type rewards), so they are ceilings, not rivals.
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from mrm_lightning.data.datamodule import EpisodicDataModule
from mrm_lightning.data.splits import TEST, TRAIN
from mrm_lightning.method.bradley_terry import fit_bradley_terry_linear, user_level_accuracy
from mrm_lightning.training.baselines import evaluate_linear_reward, fit_global_reward
from mrm_lightning.training.lightning_cli import MRMCLI, OneLineErrorParser
from mrm_lightning.training.module import MetaRewardModel

REPO = Path(__file__).resolve().parents[1]


def load(seed: int, config: str) -> EpisodicDataModule:
    args = ["--config", config, "--data.seed", str(seed), "--data.source.init_args.seed", str(seed)]
    cli = MRMCLI(
        MetaRewardModel, EpisodicDataModule, args=args, run=False, parser_class=OneLineErrorParser
    )
    datamodule = cli.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def ceilings(datamodule: EpisodicDataModule) -> dict[str, float]:
    """Unseen users' test user-level accuracy of each estimator, the global model and oracle."""
    data, truth = datamodule.data, datamodule.source.truth
    table = data.embeddings
    table = table[torch.arange(len(table))] if not torch.is_tensor(table) else table
    embeddings = table[:, : truth.user_vector.shape[1]].float()  # without the length column
    types = int(truth.user_type.max()) + 1
    type_vector = torch.stack(
        [truth.user_vector[truth.user_type == t].mean(0) for t in range(types)]
    )
    type_length = torch.stack(
        [truth.length_coef[truth.user_type == t].mean() for t in range(types)]
    )
    # [R, T]: every row's true reward under each type's mean taste
    rewards = truth.sharpness * (embeddings @ type_vector.T + truth.length[:, None] * type_length)
    train, test = datamodule.pairs_by_split[TRAIN], datamodule.held_out(TEST)
    unseen = [u for u in datamodule.split.unseen_users.tolist() if len(test[u]) and len(train[u])]
    scores: dict[str, list[float]] = {"type known": [], "likeliest type": [], "fitted weights": []}
    for user in unseen:
        fit_rows, rows = train[user], test[user]
        fit_diff = rewards[data.chosen[fit_rows]] - rewards[data.rejected[fit_rows]]  # [P, T]
        diff = rewards[data.chosen[rows]] - rewards[data.rejected[rows]]  # [Q, T]
        likeliest = int(F.logsigmoid(fit_diff).sum(0).argmax())
        weights = fit_bradley_terry_linear(fit_diff.double(), 0.01).float()
        chosen = {
            "type known": diff[:, int(truth.user_type[user])],
            "likeliest type": diff[:, likeliest],
            "fitted weights": diff @ weights,
        }
        for name, margins in chosen.items():
            scores[name].append(float((margins > 0).float().mean()))
    result = {name: statistics.mean(values) for name, values in scores.items()}
    unseen_test = data.subset(torch.cat([test[u] for u in unseen]))
    # the report's global model: every seen user's training pairs, L2 chosen on validation
    seen_train = datamodule.pairs(TRAIN, datamodule.split.seen_users)
    direction, _ = fit_global_reward(seen_train, datamodule.validation_pairs())
    result["global reward model"] = evaluate_linear_reward(direction, unseen_test)[0]
    result["oracle (true rewards)"] = user_level_accuracy(
        unseen_test.oracle_margin, unseen_test.user
    )[0]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default=str(REPO / "configs/semisynthetic.yaml"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    runs = [ceilings(load(seed, args.config)) for seed in args.seeds]
    glob, oracle = "global reward model", "oracle (true rewards)"
    print(f"\nSEMI-SYNTHETIC, unseen users' test user-level accuracy, seeds {args.seeds}")
    print(f"{'':<24}{'accuracy':>16}{'gap closed':>14}")
    for name in runs[0]:
        values = [run[name] for run in runs]
        gaps = [(r[name] - r[glob]) / (r[oracle] - r[glob]) for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(
            f"{name:<24}{statistics.mean(values):>9.3f} ±{spread:.3f}{statistics.mean(gaps):>14.2f}"
        )


if __name__ == "__main__":
    main()
