"""VPL-style variational preference model: a user's pairs give a latent z; z conditions the
reward. A new user is one forward pass, no optimisation."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from ..method.losses import bradley_terry_loss, masked_user_mean
from .evaluation import PeerModel


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, outputs))


class VPL(PeerModel):
    """Variational preference learning (after Poddar et al. 2024, from the paper's
    description). An encoder embeds each labelled support pair (chosen, rejected), averages
    over the user's pairs (so any number of them, in any order) and gives a Gaussian posterior
    ``q(z | pairs)``; the reward ``r(h, z)`` is an MLP of the response embedding and z. Training
    maximises the ELBO on episodes: Bradley-Terry likelihood of the query pairs under
    ``z ~ q(z | support)``, minus ``kl_weight`` times KL(q || N(0, I)). At evaluation z is the
    posterior mean of the user's training pairs.

    Args:
        embedding_dim: D of the input embeddings (linked from the data module).
        latent_dim: size of the user latent z.
        hidden_dim: width of the encoder's and the reward's hidden layers.
        kl_weight: beta, the weight of the KL term.
        optimizer: for the encoder and the reward network.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        latent_dim: int = 8,
        hidden_dim: int = 64,
        kl_weight: float = 0.01,
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__(num_candidates=1)
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer_factory = optimizer
        self.pair_encoder = mlp(2 * embedding_dim, hidden_dim, hidden_dim)
        self.posterior = nn.Linear(hidden_dim, 2 * latent_dim)  # mean and log-variance
        self.reward = mlp(embedding_dim + latent_dim, hidden_dim, 1)

    def encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance ``[B, Z]`` from each user's support pairs."""
        pairs = torch.cat(
            [self.scaled(batch, "support_chosen"), self.scaled(batch, "support_rejected")], -1
        )  # [B, S, 2D]
        features = self.pair_encoder(pairs)  # [B, S, H]
        mask = batch["support_mask"]  # [B, S]
        pooled = masked_user_mean(features.transpose(1, 2), mask[:, None, :])  # [B, H]
        mean, log_var = self.posterior(pooled).chunk(2, dim=-1)
        return mean, log_var

    def query_margins(self, batch: dict[str, Tensor], z: Tensor) -> Tensor:
        """``[B, Q]`` r(chosen, z) - r(rejected, z) with one z ``[B, Z]`` per user."""
        chosen, rejected = self.scaled(batch, "query_chosen"), self.scaled(batch, "query_rejected")
        z = z[:, None, :].expand(-1, chosen.shape[1], -1)  # [B, Q, Z]
        reward_chosen = self.reward(torch.cat([chosen, z], -1)).squeeze(-1)
        reward_rejected = self.reward(torch.cat([rejected, z], -1)).squeeze(-1)
        return reward_chosen - reward_rejected

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        mean, log_var = self.encode(batch)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()  # reparameterisation
        likelihood = bradley_terry_loss(self.query_margins(batch, z), batch["query_mask"])
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)  # [B]
        loss = (likelihood + self.hparams.kl_weight * kl).mean()
        batch_size = len(mean)
        self.log("train/loss", loss.detach(), batch_size=batch_size, prog_bar=True)
        self.log("train/kl", kl.mean().detach(), batch_size=batch_size)
        return loss

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    def eval_margins(self, batch: dict[str, Tensor], candidate: int) -> Tensor:
        with torch.no_grad():
            mean, _ = self.encode(batch)
            return self.query_margins(batch, mean)
