"""A built-in synthetic population whose true per-user rewards are known.

Responses are vectors h = U z + noise with z in R^L (L latent "preference directions",
U an orthonormal D x L basis). User u's true reward is r_u(h) = sharpness_u * (a_u . z):
    a_u = shared * s  +  c_cluster(u)  +  spread * eps_u
with s a direction everyone agrees on (a "quality" axis), c_j a few cluster centres that
disagree with one another (unit vectors whose mean is zero, so whatever all users share comes
from s alone, for every seed), and eps_u an individual deviation. A fraction of users is harder:
half of them atypical (a random direction instead of a cluster centre), half noisy (lower
sharpness, so their labels are closer to coin flips). Labels are drawn from Bradley-Terry:
P(first preferred) = sigmoid(r_u(h_1) - r_u(h_2)).

Because the clusters disagree, one global reward model fits the population poorly, while the
true per-user rewards (the oracle) are known exactly: the oracle's accuracy on the same pairs is
the ceiling that personalization can reach.
"""

from __future__ import annotations

import torch

from ..preferences import CompactEmbeddings, EmbeddingDtype, PreferenceData, PreferenceSource

NOISE_BLOCK = 4096  # pairs whose feature noise is drawn at once (a multiple of 8: see below)


def noise_blocks(num_pairs: int, values_per_pair: int) -> list[tuple[int, int]]:
    """``(start, stop)`` pair ranges that draw, one after another, exactly the numbers one
    ``torch.randn`` of all pairs would: torch fills normals in groups of 16 values, so every
    block but the last holds a multiple of 16 values, and the last at least 16 (or all)."""
    starts = list(range(0, num_pairs, NOISE_BLOCK))
    if len(starts) > 1 and (num_pairs - starts[-1]) * values_per_pair < 16:
        starts.pop()  # a tail of under 16 values joins the block before it
    return list(zip(starts, starts[1:] + [num_pairs], strict=True))


class SyntheticPopulation(PreferenceSource):
    """Users with known true rewards; the default data, no download needed.

    Args:
        num_users: how many users to generate.
        embedding_dim: D, the size of the response vectors.
        num_directions: L, latent preference directions (L <= D).
        num_clusters: groups of users with a shared taste.
        shared_strength: weight of the direction all users agree on (0: none).
        cluster_spread: std of each user's deviation from its cluster centre.
        sharpness: scale of true rewards; higher means less label noise.
        hard_user_fraction: share of users that are atypical or noisy.
        noisy_sharpness_factor: noisy users' sharpness is multiplied by this.
        min_pairs: fewest pairs a user judges.
        max_pairs: most pairs a user judges (counts are uniform in between).
        feature_noise: std of the D-dimensional noise added to U z.
        seed: everything is drawn from this seed.
    """

    def __init__(
        self,
        num_users: int = 400,
        embedding_dim: int = 32,
        num_directions: int = 3,
        num_clusters: int = 4,
        shared_strength: float = 0.5,
        cluster_spread: float = 0.3,
        sharpness: float = 2.5,
        hard_user_fraction: float = 0.2,
        noisy_sharpness_factor: float = 0.3,
        min_pairs: int = 60,
        max_pairs: int = 160,
        feature_noise: float = 0.3,
        seed: int = 0,
    ) -> None:
        if not 1 <= num_directions <= embedding_dim:
            raise ValueError(
                f"num_directions must be in [1, embedding_dim={embedding_dim}], "
                f"got {num_directions}"
            )
        if not 1 <= min_pairs <= max_pairs:
            raise ValueError(f"need 1 <= min_pairs <= max_pairs, got {min_pairs}, {max_pairs}")
        if not 0.0 <= hard_user_fraction <= 1.0:
            raise ValueError(f"hard_user_fraction must be in [0, 1], got {hard_user_fraction}")
        if num_users < 1 or num_clusters < 1:
            raise ValueError("num_users and num_clusters must be >= 1")
        self.num_users = num_users
        self.embedding_dim = embedding_dim
        self.num_directions = num_directions
        self.num_clusters = num_clusters
        self.shared_strength = shared_strength
        self.cluster_spread = cluster_spread
        self.sharpness = sharpness
        self.hard_user_fraction = hard_user_fraction
        self.noisy_sharpness_factor = noisy_sharpness_factor
        self.min_pairs = min_pairs
        self.max_pairs = max_pairs
        self.feature_noise = feature_noise
        self.seed = seed

    def true_user_weights(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``a`` ``[N, L]`` and sharpness ``[N]`` of every user (drawn from ``gen``)."""
        n, dims = self.num_users, self.num_directions
        unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
        shared = unit(torch.randn(dims, generator=gen))
        centres = torch.randn(self.num_clusters, dims, generator=gen)
        if self.num_clusters > 1:  # centred: the clusters disagree, none is the average taste
            centres = centres - centres.mean(0)
        centres = unit(centres)
        cluster = torch.randint(self.num_clusters, (n,), generator=gen)
        taste = centres[cluster]
        kind = torch.rand(n, generator=gen)  # < h/2: atypical, < h: noisy, else typical
        atypical = kind < self.hard_user_fraction / 2
        noisy = (kind >= self.hard_user_fraction / 2) & (kind < self.hard_user_fraction)
        taste = torch.where(atypical[:, None], unit(torch.randn(n, dims, generator=gen)), taste)
        weights = (
            self.shared_strength * shared
            + taste
            + self.cluster_spread * torch.randn(n, dims, generator=gen)
        )
        sharpness = torch.full((n,), self.sharpness)
        sharpness[noisy] *= self.noisy_sharpness_factor
        return weights, sharpness

    def load(self) -> PreferenceData:
        return self.load_as("float32")

    def load_as(self, dtype: EmbeddingDtype) -> PreferenceData:
        """The population, its table written block by block straight into ``dtype``: never
        more than one table and one block in memory (the values are float32's, rounded)."""
        gen = torch.Generator().manual_seed(self.seed)
        dim = self.embedding_dim
        basis, _ = torch.linalg.qr(torch.randn(dim, self.num_directions, generator=gen))
        weights, sharpness = self.true_user_weights(gen)
        counts = torch.randint(self.min_pairs, self.max_pairs + 1, (self.num_users,), generator=gen)
        user = torch.repeat_interleave(torch.arange(self.num_users), counts)
        num_pairs = int(counts.sum())
        latent = torch.randn(num_pairs, 2, self.num_directions, generator=gen)  # two responses
        table = torch.empty(num_pairs, 2, dim, dtype=getattr(torch, dtype))  # [P, 2, D]
        for start, stop in noise_blocks(num_pairs, 2 * dim):
            noise = torch.randn(stop - start, 2, dim, generator=gen)  # [b, 2, D]
            table[start:stop] = latent[start:stop] @ basis.T + self.feature_noise * noise
        true_reward = sharpness[user, None] * torch.einsum("pil,pl->pi", latent, weights[user])
        margin_first = true_reward[:, 0] - true_reward[:, 1]
        first_wins = torch.rand(num_pairs, generator=gen) < torch.sigmoid(margin_first)
        first_row = 2 * torch.arange(num_pairs)  # response i of pair p is row 2p + i
        chosen = torch.where(first_wins, first_row, first_row + 1)
        rejected = torch.where(first_wins, first_row + 1, first_row)
        oracle_margin = torch.where(first_wins, margin_first, -margin_first)
        table = table.view(2 * num_pairs, dim)
        return PreferenceData(
            embeddings=table if dtype == "float32" else CompactEmbeddings(table),
            user=user,
            chosen=chosen,
            rejected=rejected,
            unit=torch.arange(num_pairs),  # every pair has its own two responses
            user_ids=[f"synthetic-{i:05d}" for i in range(self.num_users)],
            oracle_margin=oracle_margin.float(),
        ).validate(origin="SyntheticPopulation")
