"""The end-of-test report: MRM next to its reference points, printed and saved as JSON."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from ..data.splits import TEST
from .baselines import evaluate_linear_reward, global_reward_model
from .gain_histogram import gain_sign_test, sign_test_line, write_gain_histogram
from .initialization import principal_subspace
from .reliability import report_calibration

COLUMNS = (("seen", "test_seen"), ("unseen", "test_unseen"), ("overall", "test"))


def write_json_atomically(path: Path, payload: dict) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, path)


W0_ROW = "MRM w0, no adaptation"  # the key in results.json, whatever the table shows


def format_table(rows: dict[str, dict[str, float]], labels: dict[str, str] | None = None) -> str:
    """Rows of seen / unseen / overall user-level accuracy as an aligned text table; ``labels``
    renames rows for display (``results.json`` keeps the keys)."""
    shown = {(labels or {}).get(name, name): values for name, values in rows.items()}
    width = max(len(name) for name in shown) + 2
    lines = [f"{'user-level accuracy':<{width}}" + "".join(f"{c:>10}" for c, _ in COLUMNS)]
    for name, values in shown.items():
        cells = "".join(f"{values.get(c, float('nan')):>10.3f}" for c, _ in COLUMNS)
        lines.append(f"{name:<{width}}{cells}")
    return "\n".join(lines)


class ResultsReport(Callback):
    """After testing: a table of MRM, w0 without adaptation, a global reward model and the oracle.

    The global model is fitted on the seen users' training pairs pooled (L2 chosen on
    validation pairs) and scored on the same test pairs as MRM. The numbers are also written
    to ``results.json`` in the run folder.

    Args:
        global_baseline: fit and report the global (non-personalized) reward model.
        filename: name of the JSON file written in the run's log folder.
    """

    def __init__(self, global_baseline: bool = True, filename: str = "results.json") -> None:
        self.global_baseline, self.filename = global_baseline, filename
        self.results: dict | None = None
        #: the table and what follows it, printed once testing is over (:meth:`teardown`)
        self.summary: str | None = None

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Print the summary once testing is over, as the last thing shown."""
        if stage == "test" and self.summary is not None:
            bar = trainer.progress_bar_callback
            if bar is not None:  # a rich bar draws its last state when it stops: stop it first
                bar.teardown(trainer, pl_module, stage)  # (its own teardown, later, is a no-op)
            print(self.summary)
            self.summary = None

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # under DDP trainer.log_dir is a broadcast from rank 0: every process must ask for it.
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        rows: dict[str, dict[str, float]] = {}
        for label, key in (("MRM (adapted)", "user_acc"), (W0_ROW, "user_acc_w0")):
            rows[label] = {
                col: metrics[f"{prefix}/{key}"]
                for col, prefix in COLUMNS
                if f"{prefix}/{key}" in metrics
            }
        datamodule = trainer.datamodule
        groups = evaluated_groups(datamodule) if hasattr(datamodule, "eval_users") else None
        if self.global_baseline and groups is not None:
            # the same fit as MRM's warm start (its fallback): the same pairs and L2 choice
            at_most = getattr(pl_module.hparams, "fit_sample_pairs", None)
            weights, l2 = global_reward_model(datamodule, at_most)
            # scored on exactly the users and test pairs MRM was scored on
            rows["global reward model"] = {
                col: evaluate_linear_reward(weights, datamodule.pairs(TEST, users))[0]
                for col, users in groups.items()
            }
        if "test/oracle_acc" in metrics:
            rows["oracle (true rewards)"] = {
                col: metrics[f"{prefix}/oracle_acc"] for col, prefix in COLUMNS
            }
        self.results = {
            "user_level_accuracy": rows,
            "metrics": metrics,
            "checkpoint": getattr(trainer.checkpoint_callback, "best_model_path", None),
        }
        if groups is not None:
            self.results["test_users"] = {col: len(users) for col, users in groups.items()}
            self.results["test_users_without_train_pairs"] = {
                "count": datamodule.users_without_training(TEST),
                "handling": datamodule.users_without_train_pairs,
            }
        per_user = {
            col: pl_module.test_user_accuracy[group]
            for col, group in (("seen", "seen"), ("unseen", "unseen"))
            if group in getattr(pl_module, "test_user_accuracy", {})
        }
        gains = {col: adaptation_gain(*pair) for col, pair in per_user.items()}
        gain_plot = run_dir / "adaptation_gain.png"
        if gains:
            for col, pair in per_user.items():
                gains[col]["sign_test_p"] = gain_sign_test(*pair)
            write_gain_histogram(gain_plot, per_user)
            self.results["adaptation_gain"] = gains
            self.results["adaptation_gain_plot"] = str(gain_plot)
        selected = selected_adaptation(pl_module)
        calibration_line = None
        if getattr(pl_module, "test_calibration", None):
            note = "" if selected is None or "posterior" not in pl_module.test_calibration else (
                f" (posterior: prior precision {selected['posterior_prior_precision']:g} and "
                f"temperature {selected['posterior_temperature']:g}, chosen on validation users)"
            )  # fmt: skip
            self.results["calibration_unseen"], calibration_line = report_calibration(
                pl_module.test_calibration, run_dir, trainer.logger, note
            )
        if selected is not None and groups is not None:
            selected["validation_users"] = len(datamodule.split.validation_users)
        if selected is not None:
            self.results["selected_adaptation"] = selected
        gap = _gap_closed(rows, "unseen")
        if gap is not None:
            self.results["unseen_gap_closed"] = gap
        # where validation kept the warm start, "w0" IS it (the global model): say so
        warm = bool(getattr(pl_module, "selected_warm_start", False))
        self.results["w0_is_warm_start"] = warm
        path = run_dir / self.filename
        write_json_atomically(path, self.results)
        labels = {W0_ROW: "MRM w0 = the warm start (global)"} if warm else None
        lines = ["\n" + format_table(rows, labels)]
        if groups is not None:
            lines.append(_users_line(self.results))
        if selected is not None:
            lines.append(_selection_line(selected))
        for col, gain in gains.items():
            lines.append(
                f"Adaptation gain on {col} users (adapted minus w0, per user): "
                f"{gain['mean']:+.3f}; helped {gain['helped']:.0%}, hurt {gain['hurt']:.0%}, "
                f"unchanged {gain['unchanged']:.0%} of {gain['users']}"
            )
        if gains:
            lines.append(sign_test_line(gains, gain_plot))
        if calibration_line is not None:
            lines.append(calibration_line)
        if gap is not None:
            lines.append(
                f"\nOn unseen users MRM closes {gap:.0%} of the gap from the global model "
                "to the oracle: (MRM - global) / (oracle - global)."
            )
        lines.append(f"\nResults: {path}")
        best = self.results["checkpoint"]
        if best:  # what mrm adapt / score / serve take as --ckpt
            lines.append(f"Best checkpoint: {best}")
        logger_root = Path(trainer.logger.save_dir) if trainer.logger is not None else run_dir
        lines.append(
            f"TensorBoard logs: {run_dir}\n  open them with: tensorboard --logdir {logger_root}"
        )
        self.summary = "\n".join(lines)


def adaptation_gain(adapted: Tensor, before: Tensor) -> dict[str, float]:
    """Per-user adapted minus w0 accuracy: its mean, and the shares of users helped, hurt and
    unchanged. ``adapted`` and ``before`` are ``[U]``, one entry per user, paired."""
    gain = adapted.double() - before.double()
    users = len(gain)
    share = (lambda mask: float(mask.sum()) / users) if users else (lambda mask: float("nan"))
    return {
        "mean": float(gain.mean()) if users else float("nan"),
        "helped": share(gain > 0),
        "hurt": share(gain < 0),
        "unchanged": share(gain == 0),
        "users": users,
    }


def selected_adaptation(module) -> dict | None:
    """The adaptation strength the tested checkpoint chose on validation, and why."""
    scales = getattr(module.hparams, "adaptation_lr_scales", None)
    if scales is None or not hasattr(module, "selected_lr_scale"):
        return None
    scale = float(module.selected_lr_scale)
    warm = bool(getattr(module, "selected_warm_start", False))
    selected = {
        "prior": "warm start (the global model, before meta-training)" if warm else "meta-learned",
        "lr_scale": scale,
        "inner_lr": module.hparams.inner_lr * scale,
        "inner_steps": module.hparams.inner_steps if scale else 0,
        "inner_optimizer": module.hparams.inner_optimizer,
        "adaptation": getattr(module.hparams, "adaptation", "gradient"),
        "inner_proximal": module.hparams.inner_proximal,
        # the Laplace posterior's prior precision, chosen on the same users (NLL)
        "posterior_prior_precision": round(
            float(getattr(module, "selected_prior_precision", 1)), 6
        ),
        "posterior_temperature": round(float(getattr(module, "selected_temperature", 1.0)), 6),
        "validation_user_acc_by_lr_scale": {
            str(s): float(a) for s, a in zip(scales, module.selection_accuracy.tolist())
        },
        "validated_on": "validation users"
        if module.validates_on_held_out_users
        else "validation pairs of every user",
    }
    selected.update(selected_start(module))
    selected["warning"] = _selection_warning(selected)
    return selected


def selected_start(module) -> dict:
    """What the mixture start chose on validation users: the principal rank (0: all
    directions) and the EM's L2; empty without a mixture start or rank restriction."""
    chosen = {}
    subspace = principal_subspace(module)
    if subspace is not None:
        chosen["principal_rank"] = int(subspace.rank)
    l2 = float(getattr(module, "mixture_l2", -1.0))
    if l2 >= 0:  # -1: no mixture start
        chosen["mixture_l2"] = l2
    return chosen


def _selection_warning(selected: dict) -> str | None:
    """Says when adaptation lowered validation accuracy (so MRM fell back towards its prior)."""
    by_scale = {float(s): a for s, a in selected["validation_user_acc_by_lr_scale"].items()}
    if 0.0 not in by_scale or all(a != a for a in by_scale.values()):  # NaN: nothing measured
        return None
    prior = by_scale[0.0]
    adapted = [a for s, a in by_scale.items() if s > 0]
    if adapted and max(adapted) < prior:
        return (
            f"every adaptation strength lowered validation accuracy (prior {prior:.3f}, best "
            f"adapted {max(adapted):.3f}): MRM uses its prior w0, with no adaptation"
        )
    return None


# below this many validation users, a kept warm start may be the vote's noise, not the data
FEW_VALIDATION_USERS_TO_WIN = 20


def _selection_line(selected: dict) -> str:
    if selected["prior"] != "meta-learned":
        line = (
            f"Chosen on {selected['validated_on']}: the warm start, i.e. the global model with "
            "no adaptation (meta-training did not beat it there)."
        )
        few = selected.get("validation_users")
        if few and few < FEW_VALIDATION_USERS_TO_WIN:
            line += (
                f"\nOnly {few} validation users voted: with so few, personalization has to win "
                "by a wide margin to replace the global model. Hold out more users for "
                "validation (data.validation_users) or accept more risk (model.warm_start_alpha)."
            )
    elif selected["lr_scale"] == 0:
        line = "Adaptation chosen on validation: none (the prior w0 for everybody)."
    elif selected.get("adaptation") == "posterior":
        line = (
            f"Adaptation chosen on {selected['validated_on']}: the posterior over the base "
            f"functions at temperature {selected['inner_lr']:g} "
            f"({selected['lr_scale']:g} x model.inner_lr)."
        )
    else:
        line = (
            f"Adaptation chosen on {selected['validated_on']}: {selected['inner_steps']} "
            f"{selected['inner_optimizer']} steps at inner lr {selected['inner_lr']:g} "
            f"({selected['lr_scale']:g} x model.inner_lr)."
        )
    if "mixture_l2" in selected:
        rank = selected.get("principal_rank") or "all"
        line += (
            f"\nMixture start chosen on validation users: principal rank {rank}, "
            f"EM L2 {selected['mixture_l2']:g}."
        )
    if selected.get("warning"):
        line += f"\nWarning: {selected['warning']}"
    return line


def evaluated_groups(datamodule) -> dict[str, list[int]]:
    """Test users per report column: the data module's one list, cut into seen and unseen."""
    users = datamodule.eval_users(TEST)
    seen = set(datamodule.split.seen_users.tolist())
    return {
        "seen": [u for u in users if u in seen],
        "unseen": [u for u in users if u not in seen],
        "overall": users,
    }


def _users_line(results: dict) -> str:
    counts, without = results["test_users"], results["test_users_without_train_pairs"]
    line = (
        f"Every row scores the same {counts['overall']} test users ({counts['seen']} seen, "
        f"{counts['unseen']} unseen) on the same pairs."
    )
    if without["count"]:
        line += f" {without['count']} users with no training pair are " + (
            "excluded." if without["handling"] == "exclude" else "scored with the prior."
        )
    return line


def _gap_closed(rows: dict[str, dict[str, float]], column: str) -> float | None:
    try:
        mrm = rows["MRM (adapted)"][column]
        glob = rows["global reward model"][column]
        oracle = rows["oracle (true rewards)"][column]
    except KeyError:
        return None
    # the ratio only means something when the oracle is clearly above the global model.
    return (mrm - glob) / (oracle - glob) if oracle - glob > 0.01 else None


def personalization_summary(runs: list[dict]) -> list[str]:
    """Lines on what several runs' ``results.json`` chose and gained, for experiment scripts:
    the adaptation strength chosen on validation per run, and the per-user gain per group."""
    scales = [r["selected_adaptation"]["lr_scale"] for r in runs if "selected_adaptation" in r]
    lines = [f"adaptation chosen on validation, per run (x inner_lr): {scales}"]
    for column in ("seen", "unseen"):
        gains = [r["adaptation_gain"][column] for r in runs if "adaptation_gain" in r]
        if gains:
            lines.append(
                f"per-user adaptation gain, {column}: "
                + ", ".join(
                    f"{g['mean']:+.3f} (helped {g['helped']:.0%}, hurt {g['hurt']:.0%})"
                    for g in gains
                )
            )
    return lines
