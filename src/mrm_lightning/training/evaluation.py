"""Evaluation of MRM: validation that chooses how strongly to adapt, and the test.

A mixin of :class:`.module.MetaRewardModel` (its only user), kept apart so that the module file
holds the method and this one how it is scored. It reads the module's ``hparams``
(``adaptation_lr_scales``, ``warm_start_alpha``, ``combination``), its ``packed`` /
``base_pairs`` / ``adapt_users`` / ``query_margins`` (the training step's path, on the same packed
batches), its metrics (``evaluation_metrics``) and its buffers: it WRITES
``selected_lr_scale``, ``selection_accuracy``, ``selected_warm_start`` and
``warm_start_comparisons`` at every validation, so the checkpoint saved then carries the choice, and
the test (and scoring) reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryCalibrationError

from ..data.batch import PairBatch
from ..method.calibration import temper
from ..method.losses import packed_bradley_terry_loss
from ..method.maml import packed_pair_margins
from ..method.metrics import TemperedNLLGrid, UserAccuracy
from ..method.selection import clearly_better, family_margin, select_adaptation
from ..method.uncertainty import packed_laplace_precision, packed_win_probability

GROUPS = ("seen", "unseen", "all")


def metric_prefix(stage: str, group: str) -> str:
    """``val_seen``, ``val_unseen``, and plain ``val`` for all users pooled."""
    return stage if group == "all" else f"{stage}_{group}"


def evaluation_metrics(
    num_scales: int, num_precisions: int = 1, temperatures: tuple[float, ...] = (1.0,)
) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    """Test metrics per group, and validation metrics per group and candidate: one per
    adaptation scale, and the last for the warm start; and per adaptation scale, the
    posterior's NLL for each prior precision and temperature."""

    def metric(name: str):
        if name.startswith("ece"):  # each pair in both orders: (p, 1) and (1 - p, 0)
            return BinaryCalibrationError(n_bins=10, norm="l1")
        if name.startswith("posterior_nll"):
            return TemperedNLLGrid(num_precisions, temperatures)
        return MeanMetric() if name.startswith(("bt_loss", "brier")) else UserAccuracy()

    def group_metrics(names: list[str]) -> nn.ModuleDict:
        return nn.ModuleDict(
            {group: nn.ModuleDict({n: metric(n) for n in names}) for group in GROUPS}
        )

    candidates = range(num_scales + 1)
    calibration = ["ece", "ece_point", "brier", "brier_point"]
    test = group_metrics(["user_acc", "user_acc_w0", "oracle_acc", "bt_loss", *calibration])
    val = group_metrics(
        [f"user_acc_{i}" for i in candidates]
        + [f"bt_loss_{i}" for i in candidates]
        + ["user_acc_w0", "oracle_acc"]
        + [f"posterior_nll_{i}" for i in range(num_scales)]
    )
    return test, val


def update_calibration(ece: BinaryCalibrationError, brier: MeanMetric, probs: Tensor) -> None:
    """Probabilities that each pair's chosen response wins: scored in both orders, so that
    the labels are not all 1 and the measure does not depend on which response is first."""
    ece.update(torch.cat([probs, 1 - probs]), torch.cat([torch.ones_like(probs),
               torch.zeros_like(probs)]).long())  # fmt: skip
    brier.update((1 - probs) ** 2)


def update_group(metric: UserAccuracy, margins: Tensor, batch: PairBatch, rows: Tensor) -> None:
    """``metric`` of the users in ``rows`` ``[B]`` from the batch's packed query margins
    ``[M_q]``: the other users count no pairs here, and a user with none is skipped."""
    metric.update(margins, batch.query_mask & rows.unsqueeze(-1), batch.query_owner)


def gathered(values: Tensor) -> Tensor:
    """``values`` of every process, concatenated (their lengths may differ), on the CPU."""
    values = values.detach().cpu()
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return torch.cat(parts)


class AdaptiveEvaluation:
    """Validation and test steps of MetaRewardModel (see the module docstring)."""

    def _adapt_for_evaluation(self, batch: PairBatch, lr_scale: float, support: Tensor) -> Tensor:
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "MRM adapts users during evaluation, which needs gradients: "
                "set trainer.inference_mode=false"
            )
        with torch.enable_grad():  # evaluation runs under no_grad; adaptation needs autograd
            weights = self.adapt_users(batch, first_order=True, lr_scale=lr_scale, support=support)
        return weights.detach()

    def _groups(self, batch: PairBatch, stage: str):
        is_seen = batch.is_seen
        rows = {"seen": is_seen, "unseen": ~is_seen, "all": torch.ones_like(is_seen)}
        return [(group, rows[group]) for group in self.stage_groups(stage)]

    def stage_groups(self, stage: str) -> tuple[str, ...]:
        """Groups scored at ``stage``: validation users are one group (``val/...``)."""
        return ("all",) if stage == "val" and self.validates_on_held_out_users else GROUPS

    def validation_step(self, batch: PairBatch | dict[str, Tensor], batch_idx: int) -> None:
        """Score every candidate adaptation strength; the best is chosen at the epoch's end."""
        batch = self.packed(batch)
        owner, pairs = batch.query_owner, batch.query_mask.sum(-1)
        with torch.no_grad():  # the base functions once; each candidate is K-dimensional work
            support, query = self.base_pairs(batch)
            margins_w0 = self.query_margins(self.w0.expand(batch.users, -1), batch, query)
        candidates = []  # [M_q] margins each
        posteriors = []  # per scale, [L, M_q] win probabilities: one row per prior precision
        for scale in self.hparams.adaptation_lr_scales:
            weights = self._adapt_for_evaluation(batch, scale, support)
            with torch.no_grad():
                candidates.append(self.query_margins(weights, batch, query))
                posteriors.append(
                    self.posterior_win_probability(
                        batch, weights, support, query, self.hparams.posterior_prior_precisions
                    )
                )
        if self.has_warm_start:
            candidates.append(self.warm_start_margins(batch))
        losses = [packed_bradley_terry_loss(margins, owner, pairs) for margins in candidates]
        for group, rows in self._groups(batch, "val"):
            metrics = self.val_metrics[group]
            for index, margins in enumerate(candidates):
                update_group(metrics[f"user_acc_{index}"], margins, batch, rows)
                metrics[f"bt_loss_{index}"].update(losses[index][rows])
            update_group(metrics["user_acc_w0"], margins_w0, batch, rows)
            if batch.query_oracle_margin is not None:
                update_group(metrics["oracle_acc"], batch.query_oracle_margin, batch, rows)
            pairs = rows.index_select(0, owner)
            for i, probs in enumerate(posteriors):
                metrics[f"posterior_nll_{i}"].update(probs[:, pairs])

    @property
    def chooses_prior_precision(self) -> bool:
        """Gradient adaptation has a Laplace posterior whose prior precision validation
        chooses; the categorical posterior of posterior adaptation has none."""
        return getattr(self.hparams, "adaptation", "gradient") != "posterior"

    def _select_posterior(self, best: int) -> None:
        """Keep the prior precision and the temperature whose tempered posterior gives
        validation users' held-out pairs the least NLL at the chosen adaptation strength."""
        grid = self.val_metrics["all"][f"posterior_nll_{best}"]
        losses = grid.compute()  # [L, T], gathered from every process
        if not torch.isfinite(losses).all():  # no validation pair (a sanity check, say)
            return
        way, temperature = divmod(int(losses.argmin()), losses.shape[1])
        if self.chooses_prior_precision:
            self.selected_prior_precision.fill_(self.hparams.posterior_prior_precisions[way])
            self.log("val/selected_prior_precision", self.selected_prior_precision.clone())
        self.selected_temperature.fill_(self.hparams.posterior_temperatures[temperature])
        self.log("val/selected_temperature", self.selected_temperature.clone())

    def on_validation_epoch_end(self) -> None:
        """Pick the adaptation strength on validation users, log the picked one's metrics, and
        keep the choice in the module's buffers (so the checkpoint saved now carries it)."""
        scales = self.hparams.adaptation_lr_scales
        warm = len(scales)  # index of the warm-start candidate
        count = len(scales) + bool(self.has_warm_start)
        results = {}
        for group in self.stage_groups("val"):
            metrics = self.val_metrics[group]  # compute() gathers across processes
            results[group] = [float(metrics[f"user_acc_{i}"].compute()) for i in range(count)]
        best = select_adaptation(results["all"][: len(scales)], scales)
        if count > warm:  # the warm start stays unless meta-training beats it clearly
            comparisons = int(self.warm_start_comparisons) + len(scales)
            if not self.trainer.sanity_checking:  # the sanity check is not a real candidate
                self.warm_start_comparisons.fill_(comparisons)
            margin = family_margin(self.hparams.warm_start_alpha, comparisons)
            metrics = self.val_metrics["all"]
            if not clearly_better(
                metrics[f"user_acc_{best}"].per_user_values(),
                metrics[f"user_acc_{warm}"].per_user_values(),
                margin,
            ):
                best = warm
            self.log("val/warm_start_margin_se", torch.tensor(margin))
        self.selected_warm_start.fill_(best == warm)
        self.selected_lr_scale.fill_(0.0 if best == warm else scales[best])
        if best != warm:
            self._select_posterior(best)
        self.selection_accuracy.copy_(torch.tensor(results["all"][: len(scales)]))
        self.log("val/selected_lr_scale", self.selected_lr_scale.clone())
        # TensorBoard's HPARAMS view compares runs on hp_metric: the selected validation
        # user-level accuracy, kept in a buffer so the test of this checkpoint logs it again
        # (after the -1 placeholder the logger writes when each fit or test starts)
        self.selected_val_accuracy.fill_(results["all"][best])
        self.log("hp_metric", self.selected_val_accuracy.clone())
        self.log("val/selected_warm_start", self.selected_warm_start.float())
        if count > warm:
            self.log("val/user_acc_warm_start", torch.tensor(results["all"][warm]))
        for group in self.stage_groups("val"):
            metrics, prefix = self.val_metrics[group], metric_prefix("val", group)
            adapted = metrics[f"user_acc_{best}"].per_user_values()
            before = adapted if best == warm else metrics["user_acc_w0"].per_user_values()
            values = {
                "user_acc": torch.tensor(results[group][best]),
                "user_acc_w0": torch.tensor(results[group][warm])
                if best == warm
                else metrics["user_acc_w0"].compute(),
                "bt_loss": metrics[f"bt_loss_{best}"].compute(),
            }
            if metrics["oracle_acc"].update_called:
                values["oracle_acc"] = metrics["oracle_acc"].compute()
            if len(adapted):
                values["adapt_gain"] = (adapted - before).mean()
            for name, value in values.items():  # already gathered: the same on every process
                self.log(f"{prefix}/{name}", value.float())
            self._histograms(prefix, adapted, before)
            for metric in metrics.values():
                metric.reset()

    def test_step(self, batch: PairBatch | dict[str, Tensor], batch_idx: int) -> None:
        """Adapt with the strength chosen on validation; score seen and unseen users."""
        batch = self.packed(batch)
        posterior = None  # [M_q] win probabilities over each user's posterior, when adapted
        if self.selected_warm_start:  # validation chose the global model: no adaptation
            margins = margins_w0 = self.warm_start_margins(batch)
        else:
            with torch.no_grad():
                support, query = self.base_pairs(batch)
            weights = self._adapt_for_evaluation(batch, float(self.selected_lr_scale), support)
            with torch.no_grad():
                margins = self.query_margins(weights, batch, query)
                margins_w0 = self.query_margins(self.w0.expand_as(weights), batch, query)
                chosen = [float(self.selected_prior_precision)]
                posterior = temper(
                    self.posterior_win_probability(batch, weights, support, query, chosen)[0],
                    float(self.selected_temperature),
                ).to(margins.dtype)
        point = torch.sigmoid(margins)
        losses = packed_bradley_terry_loss(margins, batch.query_owner, batch.query_mask.sum(-1))
        oracle = batch.query_oracle_margin
        for group, rows in self._groups(batch, "test"):
            metrics = self.test_metrics[group]
            update_group(metrics["user_acc"], margins, batch, rows)
            update_group(metrics["user_acc_w0"], margins_w0, batch, rows)
            metrics["bt_loss"].update(losses[rows])
            if oracle is not None:
                update_group(metrics["oracle_acc"], oracle, batch, rows)
            pairs = rows.index_select(0, batch.query_owner)  # [M_q]: this group's pairs
            update_calibration(metrics["ece_point"], metrics["brier_point"], point[pairs])
            if posterior is not None:
                update_calibration(metrics["ece"], metrics["brier"], posterior[pairs])
            if group == "unseen":  # kept for the report's reliability diagram
                chosen = None if posterior is None else posterior[pairs]
                self.test_probabilities.append((point[pairs], chosen))
            prefix = metric_prefix("test", group)
            for name, metric in metrics.items():
                skip = (name == "oracle_acc" and oracle is None) or (
                    name in ("ece", "brier") and posterior is None
                )
                if not skip:
                    self.log(
                        f"{prefix}/{name}",
                        metric,
                        on_step=False,
                        on_epoch=True,
                        batch_size=len(losses),
                    )

    def on_test_epoch_start(self) -> None:
        self.test_probabilities = []

    def on_test_epoch_end(self) -> None:
        self.log("hp_metric", self.selected_val_accuracy.clone())
        parts = self.test_probabilities
        self.test_calibration = (
            {"point": gathered(torch.cat([p for p, _ in parts]))} if parts else {}
        )
        if parts and parts[0][1] is not None:
            self.test_calibration["posterior"] = gathered(torch.cat([q for _, q in parts]))
        for group in ("seen", "unseen"):
            metrics = self.test_metrics[group]
            adapted = metrics["user_acc"].per_user_values()  # collective under DDP: all ranks
            before = metrics["user_acc_w0"].per_user_values()
            self.test_user_accuracy[group] = (adapted, before)  # paired per user, for the report
            prefix = metric_prefix("test", group)
            if len(adapted):
                # already gathered from every process, so the same value everywhere
                self.log(f"{prefix}/adapt_gain", (adapted - before).mean(), sync_dist=True)
            self._histograms(prefix, adapted, before)

    @torch.no_grad()
    def posterior_win_probability(
        self,
        batch: PairBatch,
        weights: Tensor,
        support: Tensor,
        query: Tensor,
        prior_precisions: Sequence[float],
    ) -> Tensor:
        """``[L, M_q]`` each query pair's win probability integrated over its user's
        posterior, one row per prior precision: a Laplace approximation at the adapted weights
        (the data's curvature computed once, each precision added to it), or the exact
        categorical posterior of posterior adaptation (one row: it has no prior's width)."""
        combination = self.hparams.combination
        if not self.chooses_prior_precision:
            probs = packed_win_probability(weights, None, query, batch.query_owner, combination)
            return probs.unsqueeze(0)
        owner = batch.support_mask.nonzero()[:, 0]  # each packed support pair's user
        first = prior_precisions[0]
        precision = packed_laplace_precision(
            weights.double(), support.double(), owner, combination, first
        )
        eye = torch.eye(weights.shape[-1], dtype=precision.dtype, device=precision.device)
        rows = []
        for prior_precision in prior_precisions:
            covariance = torch.linalg.inv(precision + (prior_precision - first) * eye)
            rows.append(packed_win_probability(
                weights.double(), covariance, query.double(), batch.query_owner, combination
            ))  # fmt: skip
        return torch.stack(rows).to(weights.dtype)

    @torch.no_grad()
    def warm_start_margins(self, batch: PairBatch) -> Tensor:
        """``[M_q]`` query margins of the warm start: the global model, before meta-training."""
        weight = self.warm_weight * self.base_rewards.scale  # [K, D]: scaled once, not the batch
        _, query = batch.split(batch.pair_rewards(lambda x: F.linear(x, weight)))
        w0 = self.warm_w0.expand(batch.users, -1)
        return packed_pair_margins(w0, query, batch.query_owner, self.hparams.combination)

    def _histograms(self, prefix: str, adapted: Tensor, before: Tensor) -> None:
        """Per-user accuracy and adaptation gain (gathered over processes) to TensorBoard."""
        if (
            isinstance(self.logger, TensorBoardLogger)
            and self.trainer.is_global_zero
            and len(adapted)
        ):
            writer = self.logger.experiment
            writer.add_histogram(f"{prefix}/per_user_acc", adapted, self.global_step)
            writer.add_histogram(
                f"{prefix}/per_user_adapt_gain", adapted - before, self.global_step
            )
