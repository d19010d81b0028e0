"""The LightningModule: MAML over a weight-combination reward head (Meta Reward Modeling)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torch.nn.utils.parametrize import register_parametrization

from ..data.batch import PairBatch, pack_padded, unpack_pairs
from ..data.buffers import ReusableBuffers
from ..data.encoder import encoder_record
from ..data.sources.columns import columns_record
from ..method.heads import BaseRewardFunctions, Combination
from ..method.losses import packed_bradley_terry_loss
from ..method.maml import InnerOptimizer, adapt, packed_pair_margins
from ..method.metrics import UserAccuracy
from ..method.posterior import posterior_weights
from ..method.schedule import warmup_cosine
from ..method.subspace import PrincipalSubspace
from .evaluation import AdaptiveEvaluation, evaluation_metrics
from .initialization import initialize_from_data
from .settings import check_model_settings


class MetaRewardModel(AdaptiveEvaluation, LightningModule):
    """Meta-learns shared initial user weights w0 and K base reward functions.

    Each training step adapts w0 to every user of the meta-batch on its support pairs (a few
    differentiable steps), scores the adapted weights on the query pairs, and updates w0 and
    the base functions through the adaptation. Validation and test adapt every user from w0 on
    its training pairs and measure user-level accuracy on its held-out pairs; validation also
    chooses the adaptation strength (:class:`mrm_lightning.training.evaluation.AdaptiveEvaluation`).

    Args:
        embedding_dim: D of the input embeddings (linked from the data module by the CLI).
        num_base_rewards: K base reward functions.
        hidden_dim: 0 for linear base functions (the paper), else an MLP of this width.
        input_scale: embeddings are multiplied by this (and by the fitted standardisation)
            before the base functions.
        combination: ``softmax`` (the paper) or ``linear`` mixing of the base rewards.
        inner_steps: adaptation steps per user (0: no personalization, w0 for everyone).
        inner_lr: inner-loop learning rate.
        inner_optimizer: ``sgd`` (classic MAML) or ``adam`` (the reference code).
        adaptation: ``gradient`` (MAML: ``inner_steps`` steps of ``inner_optimizer``) or
            ``posterior`` (softmax mixing only: a user's weights are the posterior over which
            base function is its reward, ``w0 + inner_lr * sum log sigmoid(margins)``, one
            closed-form step, :mod:`mrm_lightning.method.posterior`; ``inner_lr`` 1 is Bayes' rule).
        first_order: drop second-order terms of the meta-gradient (FOMAML).
        optimizer: the outer (meta) optimizer, a callable taking the parameters.
        warmup_fraction: share of training steps with linear lr warm-up.
        cosine_schedule: decay the meta learning rate with a cosine after warm-up.
        standardize_inputs: before meta-training, fit one scale that brings the training
            pairs' chosen-minus-rejected differences to unit RMS per dimension; it is stored
            with the model, so unit-length and raw hidden-state embeddings need no tuning.
        warm_start: before meta-training, fit the global Bradley-Terry model on the seen
            users' training pairs (L2 chosen on validation pairs) and start the base functions
            so that the prior w0 IS that model (linear base functions only).
        fit_sample_pairs: at most this many training pairs (a seeded sample) for the two fits.
        inner_proximal: pulls adapted weights back towards w0 (``proximal / 2 * |w - w0|^2``
            in each user's inner loss), in meta-training and evaluation alike.
        prior_pull: adds ``prior_pull * (|V - V_warm|^2 + |w0 - w0_warm|^2)`` to the
            meta-objective, an L2 pull towards the warm start (the global model): with few seen
            users it stops the base functions from fitting them at new users' expense.
        warm_start_alpha: the warm start (the global model, no adaptation) is a candidate at
            every validation, and is replaced only by a candidate that beats it on validation
            users (per user, paired) by a margin that keeps the chance of replacing it by luck
            below this, over every strength at every validation so far: choosing among many
            checkpoints and strengths on few validation pairs otherwise rewards noise.
        adaptation_lr_scales: at each validation, users are adapted with ``inner_lr`` times
            each of these (0: no adaptation, the prior w0); the best on validation is kept
            with the checkpoint and used for test and scoring. Include 0 so that MRM can
            always fall back to its prior.
        mixture_warm_start: before meta-training, fit a latent-class Bradley-Terry model (K
            classes of users, EM on the seen users' training pairs,
            :mod:`mrm_lightning.method.mixture`) and start the base functions at its K class
            directions and w0 at its class proportions: meta-training then starts where the
            users' tastes cluster. Linear base functions only. The global model stays the
            fallback candidate (``warm_start``).
        mixture_l2_grid: the EM fits' L2 strengths (on standardised inputs); the one whose
            mixture best predicts validation users' held-out pairs is used.
        principal_ranks: restrict the linear base functions to the span of the r leading
            principal directions of the training pairs' differences (0: no restriction;
            :mod:`mrm_lightning.method.subspace`). With several, the mixture start chooses the rank
            together with its L2 on validation users.
        posterior_prior_precisions: the candidate precisions of the Gaussian prior around w0
            in the Laplace posterior of an adapted user's weights (gradient adaptation); the
            one whose posterior predicts validation users' held-out pairs best (NLL) is kept
            with the checkpoint, for ``test/ece`` and the profiles' uncertainty. Does not
            change training or the adapted weights.
        posterior_temperatures: candidate temperatures ``T`` of the posterior's preference
            probabilities, ``sigmoid(logit(p) / T)``, chosen with the prior precision on the
            same validation pairs (1 is a candidate: no change) and kept with the checkpoint:
            ``test/ece`` and the served win probabilities use it.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        num_base_rewards: int = 4,
        hidden_dim: int = 0,
        input_scale: float = 1.0,
        combination: Combination = "softmax",
        inner_steps: int = 1,
        inner_lr: float = 0.1,
        inner_optimizer: InnerOptimizer = "sgd",
        adaptation: Literal["gradient", "posterior"] = "gradient",
        first_order: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        warmup_fraction: float = 0.05,
        cosine_schedule: bool = True,
        standardize_inputs: bool = True,
        warm_start: bool = True,
        fit_sample_pairs: int = 100_000,
        inner_proximal: float = 0.0,
        prior_pull: float = 0.0,
        warm_start_alpha: float = 0.05,
        adaptation_lr_scales: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
        mixture_warm_start: bool = False,
        mixture_l2_grid: tuple[float, ...] = (3e-4, 1e-3, 3e-3),
        principal_ranks: tuple[int, ...] = (0,),
        posterior_prior_precisions: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
        posterior_temperatures: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        check_model_settings(self.hparams)  # before anything is built: errors name the setting
        self.base_rewards = BaseRewardFunctions(
            embedding_dim, num_base_rewards, hidden_dim, input_scale
        )
        if max(principal_ranks):  # the layer reads its weight projected (buffers: basis, rank)
            register_parametrization(
                self.base_rewards.net,
                "weight",
                PrincipalSubspace(embedding_dim, max(principal_ranks)),
            )
        # softmax(0) mixes the base functions equally; linear mixing starts from their mean too.
        initial = 0.0 if combination == "softmax" else 1.0 / num_base_rewards
        self.w0 = nn.Parameter(torch.full((num_base_rewards,), initial))
        self.optimizer_factory = optimizer
        #: How per-user query losses become the training objective; None is their mean (plain
        #: MAML). The RPO callback installs itself here.
        self.task_loss_reducer: Callable[[Tensor], Tensor] | None = None
        #: per group, every test user's (adapted, w0) accuracy, kept for the end-of-run report
        self.test_user_accuracy: dict[str, tuple[Tensor, Tensor]] = {}
        #: unseen test users' (point, posterior) win probabilities per batch, for the report
        self.test_probabilities: list[tuple[Tensor, Tensor | None]] = []
        self.train_accuracy = UserAccuracy()
        #: memory that :meth:`packed` packs padded batches into, lent again once released
        self.packing_buffers = ReusableBuffers()
        self.test_metrics, self.val_metrics = evaluation_metrics(
            len(adaptation_lr_scales), len(posterior_prior_precisions), posterior_temperatures
        )
        # the adaptation strength chosen on validation, saved in every checkpoint
        self.register_buffer("selected_lr_scale", torch.tensor(1.0))
        # the Laplace posterior's prior precision chosen on validation (1: checkpoints before it)
        self.register_buffer("selected_prior_precision", torch.tensor(1.0))
        self.register_buffer("selected_temperature", torch.tensor(1.0))
        self.register_buffer("selected_val_accuracy", torch.tensor(float("nan")))
        self.register_buffer(
            "selection_accuracy", torch.full((len(adaptation_lr_scales),), float("nan"))
        )
        # The warm start (the global model, before any meta-training) stays a candidate: where
        # meta-training does not beat it on validation, it is what gets used, so MRM's prior
        # is never below the global model on validation. Linear base functions only.
        warm_shape = (num_base_rewards, embedding_dim) if hidden_dim == 0 else (0, 0)
        self.register_buffer("warm_weight", torch.zeros(warm_shape))
        self.register_buffer("warm_w0", torch.zeros(num_base_rewards))
        self.register_buffer("has_warm_start", torch.tensor(False))
        self.register_buffer("selected_warm_start", torch.tensor(False))
        # candidates compared with the warm start so far (sets the margin; resumes with the run)
        self.register_buffer("warm_start_comparisons", torch.tensor(0))
        # the mixture start's L2, chosen on validation users (-1: no mixture start)
        self.register_buffer("mixture_l2", torch.tensor(-1.0))
        #: whether validation scores held-out validation users (set from the data module)
        self.validates_on_held_out_users = False
        self.register_load_state_dict_pre_hook(keep_default_buffers)

    # ------------------------------------------------------------ from the data
    def setup(self, stage: str) -> None:
        """Before meta-training, fit the input scale and warm start on the data module's data.

        A resumed run then restores its checkpoint over them; ``mrm test`` / ``validate`` load
        them from the checkpoint.
        """
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if hasattr(datamodule, "has_validation_users"):
            datamodule.setup(stage)
            self.validates_on_held_out_users = datamodule.has_validation_users
        if stage == "fit" and hasattr(datamodule, "meta_train_users"):
            self.fit_to_data(datamodule)

    def fit_to_data(self, datamodule) -> None:
        """Standardise the inputs and start from the data (global warm start, principal
        subspace, mixture start, as the settings say), fitted on the seen users' training pairs
        only; validation users choose among candidates (:mod:`.initialization`)."""
        initialize_from_data(self, datamodule)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record how texts were encoded, under ``mrm_encoder``, and the data files' column
        names, under ``mrm_columns``: read back by :mod:`mrm_lightning.use.inference` to encode
        new texts the same way and read new users' files with the same columns (None: a source
        of embeddings only, such as the synthetic population; a source without columns)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        source = getattr(datamodule, "source", None)
        encoder = getattr(source, "encoder", None)
        checkpoint["mrm_encoder"] = None if encoder is None else encoder_record(encoder)
        checkpoint["mrm_columns"] = columns_record(source)

    # -------------------------------------------------------------- the method
    @property
    def reads_pair_differences(self) -> bool:
        """Whether the model's batches carry each pair's chosen-minus-rejected embedding instead
        of both (:class:`~mrm_lightning.data.batch.PairBatch`; read by
        ``EpisodicDataModule.train_dataloader`` and :meth:`packed`): exact for linear base
        functions, whose rewards of a difference are the difference of rewards, and half the
        bytes for the step to read."""
        return isinstance(self.base_rewards.net, nn.Linear)

    def packed(self, batch: PairBatch | Mapping[str, Tensor]) -> PairBatch:
        """The batch in the one layout the model reads. Meta-training batches for linear base
        functions come packed from the data module; padded ones (evaluation, other base
        functions, callers outside a Trainer) are packed here."""
        if isinstance(batch, PairBatch):
            return batch
        return pack_padded(batch, self.reads_pair_differences, self.packing_buffers)

    def base_pairs(self, batch: PairBatch) -> tuple[Tensor, Tensor]:
        """Base rewards of chosen minus rejected, ``[M_s, K]`` for the support pairs and
        ``[M_q, K]`` for the query pairs, from one product over the batch's pairs."""
        return batch.split(batch.pair_rewards(self.base_rewards))

    def adapt_users(
        self,
        batch: PairBatch | Mapping[str, Tensor],
        *,
        first_order: bool | None = None,
        lr_scale: float = 1.0,
        support: Tensor | None = None,
    ) -> Tensor:
        """Adapted weights ``[B, K]`` of the batch's users from their support pairs, with the
        inner learning rate times ``lr_scale`` (0: no adaptation); ``support`` may give the
        support pairs' base rewards ``[M_s, K]`` already computed (:meth:`base_pairs`)."""
        hp, batch = self.hparams, self.packed(batch)
        if support is None:
            support, _ = self.base_pairs(batch)
        mask = batch.support_mask
        support = unpack_pairs(support, mask)  # [B, S, K], zeros at the padding
        if hp.adaptation == "posterior" and hp.inner_steps:
            return posterior_weights(self.w0, support, None, mask, hp.inner_lr * lr_scale)
        return adapt(
            self.w0,
            support,
            None,
            mask,
            steps=hp.inner_steps,
            lr=hp.inner_lr * lr_scale,
            optimizer=hp.inner_optimizer,
            first_order=hp.first_order if first_order is None else first_order,
            combination=hp.combination,
            proximal=hp.inner_proximal,
        )

    def query_margins(
        self, weights: Tensor, batch: PairBatch, query: Tensor | None = None
    ) -> Tensor:
        """``[M_q]`` reward margins of the query pairs under per-user ``weights`` ``[B, K]``;
        ``query`` may give their base rewards ``[M_q, K]`` already computed."""
        if query is None:
            _, query = self.base_pairs(batch)
        return packed_pair_margins(weights, query, batch.query_owner, self.hparams.combination)

    def training_step(self, batch: PairBatch | Mapping[str, Tensor], batch_idx: int) -> Tensor:
        batch = self.packed(batch)
        support, query = self.base_pairs(batch)  # one product for both parts
        weights = self.adapt_users(batch, support=support)
        margins = self.query_margins(weights, batch, query)  # [M_q], no padding
        owner, mask = batch.query_owner, batch.query_mask
        losses = packed_bradley_terry_loss(margins, owner, mask.sum(-1))  # [B], one per user
        self.train_accuracy.update(margins, mask, owner)
        reducer = self.task_loss_reducer
        objective = losses.mean() if reducer is None else reducer(losses)
        batch_size = len(losses)
        diagnostics = self.logs_step_values(batch_idx)
        if self.hparams.prior_pull and self.has_warm_start:
            pull = self.prior_pull_penalty()
            objective = objective + self.hparams.prior_pull * pull
            if diagnostics:
                self.log("train/prior_pull", pull.detach(), batch_size=batch_size)
        if diagnostics:
            self.log(
                "train/query_loss", losses.mean().detach(), batch_size=batch_size, prog_bar=True
            )
            self.log("train/objective", objective.detach(), batch_size=batch_size)
            self.log(
                "train/adapt_distance",
                (weights - self.w0).norm(dim=-1).mean().detach(),
                batch_size=batch_size,
            )
        if self._trainer is not None:
            self.log(
                "train/user_acc",
                self.train_accuracy,
                on_step=False,
                on_epoch=True,
                batch_size=batch_size,
            )
        return objective

    def logs_step_values(self, batch_idx: int) -> bool:
        """Whether this training step's scalar values are logged: on the steps where Lightning
        sends step values to the loggers (every ``trainer.log_every_n_steps``) and on an
        epoch's first step (the progress bar shows the last values logged). Each ``self.log``
        costs about a millisecond of Lightning's bookkeeping; never without a Trainer."""
        trainer = self._trainer
        if trainer is None:
            return False
        every = trainer.log_every_n_steps
        # the step being taken, counted from 1 as Lightning's logger connector counts it; it
        # also logs the step on which a run is told to stop
        step = trainer.global_step + 1
        return batch_idx == 0 or trainer.should_stop or (every > 0 and step % every == 0)

    def prior_pull_penalty(self) -> Tensor:
        """|V - V_warm|^2 + |w0 - w0_warm|^2: how far meta-training has moved from the warm
        start (the global model). With few seen users, this keeps the base functions from
        fitting them at the expense of new users."""
        weight = self.base_rewards.net.weight
        return (weight - self.warm_weight).square().sum() + (self.w0 - self.warm_w0).square().sum()

    # ------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if not self.hparams.cosine_schedule:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "model.cosine_schedule needs a finite run: set trainer.max_epochs "
                "or trainer.max_steps"
            )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, int(total), self.hparams.warmup_fraction)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def keep_default_buffers(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """Load-state-dict pre-hook: a checkpoint written before a buffer existed (a record such as
    ``mixture_l2`` added later) loads with that buffer's default instead of failing. Missing
    parameters still fail, as they should."""
    for name, buffer in module.named_buffers():
        state_dict.setdefault(prefix + name, buffer.detach().clone())
