"""The posterior side of :class:`~mrm_lightning.use.inference.PersonalizedRewardModel`: each
adapted user's posterior as a profile stores it, rewards' spread, win probabilities over the
posterior, and the next comparisons to ask (:mod:`.user_uncertainty` has the maths).

A mixin: its methods use the model's ``inner_settings``, ``prior``, ``check_profile``,
``base_of``, ``embed``, ``pair_embeddings``, ``_grouped_rewards``, ``combination``,
``prior_precision`` and ``temperature``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..data.encoder import TextInput
from ..method.calibration import temper
from .pair_texts import text_pair, turns
from .profiles import ProfileError, UserProfile, profile_groups
from .user_uncertainty import (
    choose_pairs,
    laplace_covariances,
    moments,
    posterior_kind,
    win_probabilities,
)


class UserPosteriors:
    """Uncertainty about users, for a model that adapts and scores them."""

    def _posteriors(self, weights: Tensor, batch: dict) -> list[dict | None]:
        """Each adapted user's posterior, as the profile stores it."""
        kind = posterior_kind(self.inner_settings())
        if kind != "laplace":
            return [None if kind is None else {"kind": kind}] * len(weights)
        differences = self.base_of(batch["support_chosen"]) - self.base_of(
            batch["support_rejected"]
        )
        covariances = laplace_covariances(
            weights, differences, batch["support_mask"], self.combination, self.prior_precision
        )
        return [
            {"kind": "laplace", "covariance": cov.tolist(), "prior_precision": self.prior_precision}
            for cov in covariances
        ]

    def posterior(self, profile: UserProfile | None) -> tuple[Tensor, Tensor | None]:
        """``[1, K]`` weights and ``[1, K, K]`` covariance (None: categorical) of a profile's
        posterior, or of the prior where there is no profile."""
        kind = posterior_kind(self.inner_settings())
        if kind is None:
            raise ProfileError(
                "validation chose the global model (no adaptation) for this checkpoint: it "
                "models no per-user uncertainty"
            )
        if profile is None:
            weights = torch.tensor([self.prior()], dtype=torch.float64)
            k = weights.shape[1]
            eye = torch.eye(k, dtype=torch.float64).unsqueeze(0)
            return weights, None if kind == "categorical" else eye / self.prior_precision
        self.check_profile(profile)
        if profile.posterior is None:
            raise ProfileError(
                "the profile carries no uncertainty (made before profiles had one): adapt the "
                "user again"
            )
        weights = torch.tensor([profile.weights], dtype=torch.float64)
        if profile.posterior["kind"] == "categorical":
            return weights, None
        return weights, torch.tensor([profile.posterior["covariance"]], dtype=torch.float64)

    @torch.no_grad()
    def reward_moments(
        self, embeddings: Tensor, profile: UserProfile | None = None
    ) -> tuple[list[float], list[float]]:
        """Each of ``[N, D]`` response embeddings' reward under the posterior: (mean, standard
        deviation). The mean is the point reward for a categorical posterior's expectation and
        for the Laplace one (linearised at the adapted weights)."""
        weights, covariance = self.posterior(profile)
        mean, variance = moments(
            weights, covariance, self.base_of(embeddings)[None], self.combination
        )
        return [float(m) for m in mean[0]], [float(v) ** 0.5 for v in variance[0]]

    @torch.no_grad()
    def win_probability_embeddings(
        self, first: Tensor, second: Tensor, profile: UserProfile | None = None
    ) -> list[float]:
        """For each row of ``[N, D]`` ``first`` and ``second``: the probability the user
        prefers ``first``, integrated over the posterior, at the temperature validation chose
        (the checkpoint's ``selected_temperature``: calibrated on validation users)."""
        weights, covariance = self.posterior(profile)
        differences = (self.base_of(first) - self.base_of(second))[None]
        probs = win_probabilities(weights, covariance, differences, self.combination)[0]
        return [float(p) for p in temper(probs, self.temperature)]

    def score_items_with_std(
        self, items: Sequence[TextInput], profiles: Sequence[UserProfile | None]
    ) -> tuple[list[float], list[float]]:
        """:meth:`score_items` and each reward's standard deviation under its profile's
        posterior (the prior's where the profile is None), in one encode call."""
        groups = profile_groups(items, profiles)
        for profile, _ in groups:
            self.posterior(profile)  # checked, and has uncertainty, before any encoding
        vectors = self.embed(list(items))
        rewards = self._grouped_rewards(vectors, groups)
        spread = [0.0] * len(items)
        for profile, rows in groups:
            for row, std in zip(rows, self.reward_moments(vectors[rows], profile)[1]):
                spread[row] = std
        return rewards, spread

    def win_probability(
        self,
        prompt: str,
        first: str,
        second: str,
        profile: UserProfile | None = None,
        history: Sequence = (),
    ) -> float:
        """The probability that the user prefers ``first`` to ``second`` as the answer to
        ``prompt``, integrated over the posterior of their weights."""
        turns_ = tuple((str(r), str(c)) for r, c in turns(history))
        vectors = self.embed([(turns_, prompt, first), (turns_, prompt, second)])
        return self.win_probability_embeddings(vectors[:1], vectors[1:], profile)[0]

    def next_pairs(
        self, profile: UserProfile | None, candidates: Any, k: int = 1, answered: Any = ()
    ) -> list[int]:
        """Indices of the ``k`` candidate comparisons to ask this user next, most
        informative first (expected information gain about their weights; see
        :func:`~mrm_lightning.use.user_uncertainty.choose_pairs`). ``candidates``: pairs of
        texts (``prompt``, ``a``, ``b`` or ``chosen``, ``rejected``; the order of the two does
        not matter) or ``{"chosen": Tensor[N, D], "rejected": Tensor[N, D]}``. A candidate
        that repeats an ``answered`` pair (either order) or an earlier candidate is never
        chosen; fewer than ``k`` come back where fewer remain."""
        return self.next_pairs_many({"": (profile, candidates, answered)}, k)[""]

    def next_pairs_many(self, asks: Mapping[str, tuple], k: int = 1) -> dict[str, list[int]]:
        """:meth:`next_pairs` for many users in one batched choice: ``asks`` maps each user to
        ``(profile or None, candidates, answered)``; their candidate lists may differ."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        users = list(asks)
        if not users:
            return {}
        posteriors = [self.posterior(asks[u][0]) for u in users]
        rows = [self._candidate_rows(asks[u][1], asks[u][2]) for u in users]
        most = max(len(available) for _, available in rows)
        kinds = {covariance is None for _, covariance in posteriors}
        dim = posteriors[0][0].shape[1]
        differences = torch.zeros(len(users), most, dim, dtype=torch.float64)
        available = torch.zeros(len(users), most, dtype=torch.bool)
        for row, (diff, free) in enumerate(rows):
            differences[row, : len(free)], available[row, : len(free)] = diff, free
        weights = torch.cat([w for w, _ in posteriors])
        covariance = None if kinds == {True} else torch.cat([c for _, c in posteriors])
        chosen = choose_pairs(weights, covariance, differences, available, min(k, most),
                              self.combination)  # fmt: skip
        return {u: [int(i) for i in picks if i >= 0] for u, picks in zip(users, chosen)}

    @torch.no_grad()
    def _candidate_rows(self, candidates: Any, answered: Any) -> tuple[Tensor, Tensor]:
        """``[N, K]`` base-reward differences of the candidates, and which may be asked."""
        if isinstance(candidates, Mapping):
            first, second = self.pair_embeddings(candidates)
            available = torch.ones(len(first), dtype=torch.bool)
        else:
            pairs = [_candidate_pair(c) for c in candidates]
            seen = {_unordered(_candidate_pair(a)) for a in answered}
            available = torch.zeros(len(pairs), dtype=torch.bool)
            for row, pair in enumerate(pairs):
                key = _unordered(pair)
                available[row] = key not in seen and pair["chosen"] != pair["rejected"]
                seen.add(key)
            first, second = self.pair_embeddings(pairs)
        return (self.base_of(first) - self.base_of(second)).double(), available


def _candidate_pair(pair: Any) -> dict:
    """A candidate comparison as a pair dict: ``a``/``b`` read as ``chosen``/``rejected``."""
    if isinstance(pair, Mapping) and "a" in pair and "b" in pair:
        return {"prompt": pair.get("prompt"), "chosen": pair["a"], "rejected": pair["b"],
                "history": pair.get("history") or ()}  # fmt: skip
    history, prompt, chosen, rejected = text_pair(pair)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "history": history}


def _unordered(pair: dict) -> tuple:
    history = tuple(tuple(turn) for turn in turns(pair.get("history") or ()))
    return history, pair["prompt"], frozenset((pair["chosen"], pair["rejected"]))
