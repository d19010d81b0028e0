"""A SEMI-SYNTHETIC benchmark: real texts, simulated users whose true rewards are known.

The texts and their embeddings come from a real source (the Reddit TL;DR posts and summaries,
or any other :class:`TextPreferences`); the users and all their labels are simulated. Results
on it must be labelled "semi-synthetic" wherever they are reported: they say how well a method
recovers planted tastes from real text embeddings, not how well it predicts real people.
Peers (PAL, CoPL) report on a TL;DR relabelled by summary length; this source is the same kind
of benchmark, with richer tastes and a known oracle.

Candidate comparisons are all pairs of different responses to the same prompt of the same unit
(every real comparison's two summaries, and any other summary of that post), and a simulated
pair keeps the real unit (the post), so the data module's leak-free split still applies.

Each user u has a type t (users are dealt to types in turn) and a true reward

    r_u(h, text) = sharpness * (shared_weight * s.h + direction_weight * d_t.h
                                + length_weight * sign_t * len(text) + individual_spread * e_u.h)

with h the text's embedding, s a direction everyone agrees on (a random "quality" axis), d_t one
direction per type (random, centred across types so that types disagree and none is the
average taste), len the standardized log word count of the response and sign_t = +1 for type 0
(likes long responses), -1 for type 1 (likes short ones), 0 for the others, so the length rule
has no global component either. e_u is a user's own random direction. s, d_t and e_u are drawn
in the span of the ``taste_rank`` leading principal directions of the candidate comparisons'
embedding differences: tastes about what the encoder represents strongly, not about its
faintest dimensions. Mean-pooled sentence embeddings barely encode length (all-MiniLM-L6-v2
on the TL;DR slice: a linear fit explains 10% of log word count), so by default the length
feature is appended to every embedding (``length_in_inputs``): the readable rule is then
visible to every model, as it would be to a reward model that reads the text.

Every term (s, each d_t, each e_u and len) is scaled so that its difference over the
candidate comparisons has an RMS of 1: the weights compare directly, and sharpness alone sets
how noisy the labels are. Labels are drawn from Bradley-Terry, P(a preferred to b) =
sigmoid(r_u(a) - r_u(b)), and the oracle margin r_u(chosen) - r_u(rejected) gives the report
its oracle row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ...method.subspace import leading_directions
from ..preferences import PreferenceData, PreferenceSource
from .text import TextPreferences, index_texts


def length_feature(texts: Sequence[str]) -> Tensor:
    """``[len(texts)]`` standardized log word count (mean 0, population std 1; 0 if all equal)."""
    logs = torch.tensor([math.log(max(len(t.split()), 1)) for t in texts], dtype=torch.float64)
    spread = logs.std(unbiased=False) if len(logs) > 1 else logs.new_zeros(())
    centred = logs - logs.mean()
    return (centred / spread if spread > 0 else centred).float()


def centred_unit_directions(raw: Tensor) -> Tensor:
    """``[T, D]`` rows minus their mean, then scaled to unit length (types that disagree)."""
    centred = raw - raw.mean(0) if len(raw) > 1 else raw
    return centred / centred.norm(dim=-1, keepdim=True)


def length_signs(num_types: int) -> Tensor:
    """``[T]``: +1 for type 0 (longer is better), -1 for type 1 (shorter), 0 for the rest."""
    signs = torch.zeros(num_types)
    signs[0], signs[1] = 1.0, -1.0
    return signs


def principal_directions(differences: Tensor, rank: int) -> Tensor:
    """``[D, rank]`` orthonormal leading eigenvectors of ``differences.T @ differences``
    (``[C, D]`` rows), largest first; ``rank`` 0 (or >= D) gives the identity: every direction."""
    dim = differences.shape[1]
    if rank <= 0 or rank >= dim:
        return torch.eye(dim)
    return leading_directions(differences.double().T @ differences.double(), rank).float()


def difference_rms(values: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """RMS over comparisons of ``values[first] - values[second]`` (per column of ``[R, K]``)."""
    return (values[first] - values[second]).square().mean(0).sqrt()


def candidate_comparisons(groups: Sequence) -> tuple[Tensor, Tensor]:
    """Every pair ``(first, second)``, first < second, of rows with the same group key."""
    rows_of: dict = {}
    for row, key in enumerate(groups):
        rows_of.setdefault(key, []).append(row)
    pairs = [(a, b) for rows in rows_of.values() for i, a in enumerate(rows) for b in rows[i + 1 :]]
    first, second = zip(*pairs) if pairs else ((), ())
    return torch.tensor(first, dtype=torch.long), torch.tensor(second, dtype=torch.long)


@dataclass
class TrueRewards:
    """The simulated users' rewards: ``r_u(row) = sharpness * (h_row . user_vector[u]
    + length_coef[u] * length[row])`` (all scalings folded into the vectors and coefficients).

    Attributes:
        user_type: ``[N]`` each user's type.
        user_vector: ``[N, D]`` shared, type and individual directions, weighted and scaled.
        length_coef: ``[N]`` weight of the length rule (length_weight * sign_type / its RMS).
        length: ``[R]`` length_feature of every row's response.
        sharpness: scale of all rewards (higher: less label noise).
    """

    user_type: Tensor
    user_vector: Tensor
    length_coef: Tensor
    length: Tensor
    sharpness: float

    def reward(self, embeddings, user: Tensor, rows: Tensor) -> Tensor:
        """``[P]`` true reward of ``rows`` (embedding rows) for ``user`` (same shape)."""
        taste = (embeddings[rows] * self.user_vector[user]).sum(-1)
        return self.sharpness * (taste + self.length_coef[user] * self.length[rows])


class SemiSyntheticUsers(PreferenceSource):
    """SEMI-SYNTHETIC: real texts, simulated users of a few types with known true rewards.

    Report results on it as semi-synthetic (real texts, simulated users and labels).

    Args:
        texts: the real text source whose prompts, responses and embeddings are used (its own
            users and labels are ignored), e.g. mrm_lightning.RedditTLDR with local paths.
        num_users: how many users to simulate.
        num_types: user types with disagreeing tastes (>= 3); users are dealt to types in turn.
        min_pairs: fewest pairs a user judges.
        max_pairs: most pairs a user judges (counts are uniform in between; at most the number
            of candidate comparisons).
        shared_weight: weight of the direction every user agrees on.
        direction_weight: weight of the type's own direction in embedding space.
        length_weight: weight of the length rule (type 0 likes long, type 1 short responses).
        individual_spread: weight of each user's own random direction.
        taste_rank: the shared, type and individual directions are drawn in the span of this
            many leading principal directions of the candidates' embedding differences (0: in
            the whole embedding space).
        length_in_inputs: append the standardized log word count to every embedding, so that
            the length rule is visible to the models (mean-pooled embeddings barely encode it).
        sharpness: scale of the true rewards; higher means less label noise.
        seed: directions, users, pairs and labels are all drawn from this seed.
    """

    def __init__(
        self,
        texts: TextPreferences,
        num_users: int = 200,
        num_types: int = 4,
        min_pairs: int = 40,
        max_pairs: int = 120,
        shared_weight: float = 0.5,
        direction_weight: float = 1.0,
        length_weight: float = 1.0,
        individual_spread: float = 0.3,
        taste_rank: int = 32,
        length_in_inputs: bool = True,
        sharpness: float = 2.0,
        seed: int = 0,
    ) -> None:
        if num_types < 3:
            raise ValueError(f"num_types must be >= 3, got {num_types}")
        if num_users < num_types:
            raise ValueError(f"need num_users >= num_types, got {num_users} < {num_types}")
        if not 1 <= min_pairs <= max_pairs:
            raise ValueError(f"need 1 <= min_pairs <= max_pairs, got {min_pairs}, {max_pairs}")
        if sharpness <= 0:
            raise ValueError(f"sharpness must be > 0, got {sharpness}")
        if taste_rank < 0:
            raise ValueError(f"taste_rank must be >= 0, got {taste_rank}")
        self.texts, self.num_users, self.num_types = texts, num_users, num_types
        self.min_pairs, self.max_pairs = min_pairs, max_pairs
        self.shared_weight, self.direction_weight = shared_weight, direction_weight
        self.length_weight, self.individual_spread = length_weight, individual_spread
        self.taste_rank, self.length_in_inputs = taste_rank, length_in_inputs
        self.sharpness, self.seed = sharpness, seed
        self.truth: TrueRewards | None = None  # set by load()

    @property
    def embedding_dim(self) -> int:
        return self.texts.embedding_dim + int(self.length_in_inputs)

    def prepare(self) -> None:
        """Cache the real texts' embeddings (the data module's prepare_data)."""
        prepare = getattr(self.texts, "prepare", None)
        if callable(prepare):
            prepare()

    def true_rewards(
        self, embeddings, length: Tensor, first: Tensor, second: Tensor, gen: torch.Generator
    ) -> TrueRewards:
        """Draw the directions and users; scale every term to unit RMS over the candidates."""
        types = self.num_types
        diff = embeddings[first] - embeddings[second]  # [C, D]
        basis = principal_directions(diff, self.taste_rank)  # [D, r]
        rank = basis.shape[1]
        shared = torch.randn(1, rank, generator=gen) @ basis.T
        shared = shared / shared.norm()
        directions = centred_unit_directions(torch.randn(types, rank, generator=gen) @ basis.T)
        own = torch.randn(self.num_users, rank, generator=gen) @ basis.T

        def scaled(vectors: Tensor) -> Tensor:  # [K, D] -> unit RMS of diff @ v per row
            return vectors / (diff @ vectors.T).square().mean(0).sqrt().clamp_min(1e-12)[:, None]

        user_type = torch.arange(self.num_users) % types
        user_vector = (
            self.shared_weight * scaled(shared)
            + self.direction_weight * scaled(directions)[user_type]
            + self.individual_spread * scaled(own)
        )
        length_rms = float(difference_rms(length, first, second).clamp_min(1e-12))
        length_coef = self.length_weight * length_signs(types)[user_type] / length_rms
        return TrueRewards(user_type, user_vector, length_coef, length, self.sharpness)

    def load(self) -> PreferenceData:
        real = self.texts.load()
        items = index_texts(self.texts.records())[0]  # the rows of real.embeddings, in order
        if len(items) != len(real.embeddings):
            raise ValueError("SemiSyntheticUsers: the text source's rows do not match its texts")
        units: dict[int, int] = {}  # row -> unit; a text under two units keeps the first
        for rows in (real.chosen, real.rejected):
            for row, unit in zip(rows.tolist(), real.unit.tolist()):
                units.setdefault(row, unit)
        unit_of_row = torch.tensor([units[row] for row in range(len(items))])
        groups = [(units[row], history, prompt) for row, (history, prompt, _) in enumerate(items)]
        first, second = candidate_comparisons(groups)
        num_candidates = len(first)
        if not num_candidates:
            raise ValueError("SemiSyntheticUsers: no prompt has two different responses")

        gen = torch.Generator().manual_seed(self.seed)
        length = length_feature([response for *_, response in items])
        self.truth = truth = self.true_rewards(real.embeddings, length, first, second, gen)
        counts = torch.randint(self.min_pairs, self.max_pairs + 1, (self.num_users,), generator=gen)
        counts = counts.clamp_max(num_candidates)
        picks = torch.cat(
            [torch.randperm(num_candidates, generator=gen)[:n] for n in counts.tolist()]
        )
        user = torch.repeat_interleave(torch.arange(self.num_users), counts)
        a, b = first[picks], second[picks]
        margin = truth.reward(real.embeddings, user, a) - truth.reward(real.embeddings, user, b)
        a_wins = torch.rand(len(picks), generator=gen) < torch.sigmoid(margin)
        types = truth.user_type.tolist()
        embeddings = real.embeddings  # the text source's table, shared
        if self.length_in_inputs:  # [R, D + 1]: the readable rule, visible to the models
            table = embeddings[torch.arange(len(embeddings))].float()
            embeddings = torch.cat([table, length[:, None].to(table.dtype)], dim=1)
        return PreferenceData(
            embeddings=embeddings,
            user=user,
            chosen=torch.where(a_wins, a, b),
            rejected=torch.where(a_wins, b, a),
            unit=unit_of_row[a],  # the real post: splits keep it on one side for everybody
            user_ids=[f"semisyn-type{t}-{i:04d}" for i, t in enumerate(types)],
            oracle_margin=torch.where(a_wins, margin, -margin).float(),
        ).validate(origin="SemiSyntheticUsers")
