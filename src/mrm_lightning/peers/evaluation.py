"""What every peer method shares: input standardisation, validation that chooses a candidate
setting, and the test, on the same data module and user-level metric as MRM.

A peer subclasses :class:`PeerModel` and implements :meth:`PeerModel.eval_margins`: the query
margins ``[B, Q]`` of an evaluation batch (support = each user's training pairs, query = its
held-out pairs) under candidate setting ``i`` (a regularisation strength, a number of
fine-tuning steps...; one candidate when there is nothing to choose). Validation scores every
candidate on the validation users and keeps the best in the ``selected`` buffer, so the
checkpoint saved then carries the choice; the test reads it. Metrics are logged as MRM's are:
``val/user_acc``, ``test_seen/user_acc``, ``test_unseen/user_acc``, ``test/user_acc``.
"""

from __future__ import annotations

import inspect

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from ..data.splits import TRAIN
from ..method.metrics import UserAccuracy
from ..method.selection import select_adaptation
from ..method.warm_start import scale_for_mean_square
from ..training.baselines import mean_square_difference

GROUPS = {"seen": "test_seen", "unseen": "test_unseen", "all": "test"}


class PeerModel(LightningModule):
    """Base class of the peer methods (see the module docstring).

    Args:
        num_candidates: how many settings validation chooses among (subclasses pass it).
        standardize_inputs: scale embeddings so that the training pairs' chosen-minus-rejected
            differences have unit RMS per dimension (as MRM does), fitted once at fit.
    """

    def __init__(self, num_candidates: int = 1, standardize_inputs: bool = True) -> None:
        super().__init__()
        self.num_candidates = num_candidates
        self.standardize_inputs = standardize_inputs
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("selected", torch.tensor(0))
        self.register_buffer("selected_val_accuracy", torch.tensor(float("nan")))
        self.val_accuracy = nn.ModuleList(UserAccuracy() for _ in range(num_candidates))
        self.test_accuracy = nn.ModuleDict({group: UserAccuracy() for group in GROUPS})
        #: per group, every test user's accuracy, kept after the test (for the benchmark)
        self.test_user_accuracy: dict[str, Tensor] = {}

    def save_hyperparameters(self, *args, ignore=None, logger: bool = True) -> None:
        """Lightning's, called from a subclass's ``__init__``, plus the method's name: runs of
        different methods then compare in TensorBoard's HPARAMS view."""
        caller = inspect.currentframe().f_back  # the subclass's __init__, whose args are saved
        super().save_hyperparameters(*args, ignore=ignore, frame=caller, logger=logger)
        self.hparams["method"] = type(self).__name__
        self._hparams_initial["method"] = type(self).__name__  # what the logger records

    # ------------------------------------------------------------ subclasses
    def eval_margins(self, batch: dict[str, Tensor], candidate: int) -> Tensor:
        """``[B, Q]`` query margins for evaluation users personalised from their support."""
        raise NotImplementedError

    def build(self, datamodule) -> None:
        """Create what depends on the data (e.g. a table of per-user weights); every stage."""

    def fit_to_data(self, datamodule) -> None:
        """Fit what is fitted once before training (closed-form models); at fit only."""

    # ------------------------------------------------------------- the data
    def setup(self, stage: str) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is None or not hasattr(datamodule, "pairs"):
            return  # evaluated on given dataloaders: everything is built already
        datamodule.setup(stage)
        self.build(datamodule)
        if stage == "fit":
            if self.standardize_inputs:
                train = datamodule.pairs(TRAIN, datamodule.meta_train_users)
                scale = scale_for_mean_square(mean_square_difference(train))  # MRM's scale
                self.input_scale.fill_(scale)
            self.fit_to_data(datamodule)

    def scaled(self, batch: dict[str, Tensor], name: str) -> Tensor:
        """``[B, P, D]`` embeddings of ``batch[name]`` times the fitted input scale."""
        return batch[name] * self.input_scale

    # ------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        with torch.enable_grad():  # personalisation may fit weights by gradient steps
            for index, metric in enumerate(self.val_accuracy):
                margins = self.eval_margins(batch, index).detach()
                metric.update(margins, batch["query_mask"])

    def on_validation_epoch_end(self) -> None:
        accuracies = [float(metric.compute()) for metric in self.val_accuracy]
        # a tie goes to the lower index: subclasses list their weakest setting first
        best = select_adaptation(accuracies, list(range(self.num_candidates)))
        self.selected.fill_(best)
        self.selected_val_accuracy.fill_(accuracies[best])
        self.log("val/user_acc", self.selected_val_accuracy.clone())
        self.log("val/selected_candidate", self.selected.float())
        # TensorBoard's HPARAMS view compares runs on hp_metric (logged again at test)
        self.log("hp_metric", self.selected_val_accuracy.clone())
        for metric in self.val_accuracy:
            metric.reset()

    # ------------------------------------------------------------------ test
    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        with torch.enable_grad():
            margins = self.eval_margins(batch, int(self.selected)).detach()
        mask, is_seen = batch["query_mask"], batch["is_seen"]
        rows = {"seen": is_seen, "unseen": ~is_seen, "all": torch.ones_like(is_seen)}
        for group, prefix in GROUPS.items():
            metric = self.test_accuracy[group]
            metric.update(margins[rows[group]], mask[rows[group]])
            self.log(
                f"{prefix}/user_acc", metric, on_step=False, on_epoch=True, batch_size=len(mask)
            )

    def on_test_epoch_end(self) -> None:
        self.log("hp_metric", self.selected_val_accuracy.clone())
        for group in ("seen", "unseen"):
            self.test_user_accuracy[group] = self.test_accuracy[group].per_user_values()

    # ------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        """Closed-form peers fit in :meth:`fit_to_data` and train nothing here."""
        return None

    def configure_optimizers(self):
        return None
