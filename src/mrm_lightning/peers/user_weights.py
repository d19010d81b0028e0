"""Shared K reward functions with a weight vector per user, learned jointly on seen users.

The structure LoRe (a low-rank basis of reward functions) and PAL (a mixture of prototypes)
share: ``r_u(h) = sum_k c(w_u)_k * phi_k(h)``, with ``phi`` shared by everybody and ``w_u``
one row of a table of seen users' weights, both trained on the seen users' training pairs. A
user outside the table (a validation or unseen user) fits only its own ``w`` on its pairs,
``phi`` frozen, starting from the seen users' mean weights and pulled towards it with a
strength chosen on validation users. Subclasses give ``phi`` (:meth:`base_rewards`).
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from ..method.heads import Combination
from ..method.losses import bradley_terry_loss
from ..method.maml import InnerOptimizer, adapt, pair_margins
from .evaluation import PeerModel


class UserWeightsModel(PeerModel):
    """Base of :class:`LoRe` and :class:`PAL` (see the module docstring).

    Args:
        num_base_rewards: K shared reward functions (basis vectors or prototypes).
        combination: how a user's weights mix them: ``softmax`` (on the simplex) or ``linear``.
        new_user_steps: optimisation steps when fitting a new user's weights.
        new_user_lr: their learning rate.
        new_user_optimizer: ``adam`` (scale-free steps) or ``sgd``.
        pull_grid: strengths of the pull towards the seen users' mean weights when fitting a
            new user (``pull / 2 * |w - w_mean|^2`` added to its loss), weakest first; chosen
            on validation users.
        optimizer: for the shared functions and the seen users' weights.
    """

    def __init__(
        self,
        num_base_rewards: int = 4,
        combination: Combination = "softmax",
        new_user_steps: int = 100,
        new_user_lr: float = 0.05,
        new_user_optimizer: InnerOptimizer = "adam",
        pull_grid: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0),
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__(num_candidates=len(pull_grid))
        self.optimizer_factory = optimizer
        self.user_weights: nn.Embedding | None = None  # [num_users, K], built from the data
        self.register_buffer("trained_user", torch.zeros(0, dtype=torch.bool))

    def base_rewards(self, embeddings: Tensor) -> Tensor:
        """``[..., D]`` (already scaled) -> ``[..., K]``."""
        raise NotImplementedError

    # ------------------------------------------------------------- the data
    def build(self, datamodule) -> None:
        if self.user_weights is not None:
            return
        num_users, k = datamodule.data.num_users, self.hparams.num_base_rewards
        initial = 0.0 if self.hparams.combination == "softmax" else 1.0 / k
        self.user_weights = nn.Embedding(num_users, k)
        nn.init.constant_(self.user_weights.weight, initial)
        trained = torch.zeros(num_users, dtype=torch.bool)
        trained[datamodule.meta_train_users] = True
        self.trained_user = trained

    def base_pairs(self, batch: dict[str, Tensor], prefix: str) -> tuple[Tensor, Tensor]:
        """``[B, P, K]`` base rewards of the chosen and rejected responses of ``prefix``."""
        return (
            self.base_rewards(self.scaled(batch, f"{prefix}_chosen")),
            self.base_rewards(self.scaled(batch, f"{prefix}_rejected")),
        )

    # ------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        # every training pair of the episode: support and query together, [B, S + Q, ...]
        chosen = torch.cat([batch["support_chosen"], batch["query_chosen"]], dim=1)
        rejected = torch.cat([batch["support_rejected"], batch["query_rejected"]], dim=1)
        mask = torch.cat([batch["support_mask"], batch["query_mask"]], dim=1)
        weights = self.user_weights(batch["user"])  # [B, K]
        margins = pair_margins(
            weights,
            self.base_rewards(chosen * self.input_scale),
            self.base_rewards(rejected * self.input_scale),
            self.hparams.combination,
        )  # [B, S + Q]
        loss = bradley_terry_loss(margins, mask).mean()
        self.log("train/loss", loss.detach(), batch_size=len(mask), prog_bar=True)
        return loss

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    # ----------------------------------------------------------- evaluation
    def eval_margins(self, batch: dict[str, Tensor], candidate: int) -> Tensor:
        hp = self.hparams
        trained = self.trained_user[batch["user"]]  # [B]
        table = self.user_weights.weight.detach()
        mean = table[self.trained_user].mean(0)  # [K] the seen users' mean weights
        with torch.no_grad():
            support, query = self.base_pairs(batch, "support"), self.base_pairs(batch, "query")
        fitted = adapt(
            mean,
            *support,
            batch["support_mask"],
            steps=hp.new_user_steps,
            lr=hp.new_user_lr,
            optimizer=hp.new_user_optimizer,
            first_order=True,
            combination=hp.combination,
            proximal=hp.pull_grid[candidate],
        ).detach()  # [B, K]: basis frozen, only the weights move
        # users trained jointly keep their learned weights (the method's seen users)
        weights = torch.where(trained[:, None], table[batch["user"]], fitted)
        return pair_margins(weights, *query, hp.combination)  # [B, Q]
