"""A trained model in use: load a checkpoint, adapt it to users, score responses.

    model = PersonalizedRewardModel.from_checkpoint("runs/.../best.ckpt")
    profile = model.adapt([{"prompt": ..., "chosen": ..., "rejected": ...}, ...])
    model.score("a prompt", ["response 1", "response 2"], profile)  # [r1, r2]

Adaptation is exactly what validation and test do (``MetaRewardModel.adapt_users``, first
order, with the inner learning rate times the strength chosen on validation), or the global
model with no adaptation where validation chose the warm start. Texts are embedded with the
encoder the checkpoint was trained with, which :meth:`MetaRewardModel.on_save_checkpoint`
records under ``checkpoint["mrm_encoder"]`` (:func:`~mrm_lightning.data.encoder.encoder_record`;
None for a model trained on embeddings only).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.encoder import TextEncoder, TextInput
from ..method.heads import combine
from ..training.checkpoint_file import CheckpointError, model_settings, read_checkpoint
from ..training.module import MetaRewardModel
from .pair_texts import text_pair as _text_pair
from .pair_texts import turns as _turns
from .profiles import ProfileError, UserProfile, profile_groups
from .user_posteriors import UserPosteriors
from .user_uncertainty import DEFAULT_PRIOR_PRECISION


def load_checkpoint(path: str | Path) -> tuple[dict, str]:
    """The checkpoint's contents and the sha256 of its bytes (read once, so the two agree).

    Through ``torch.load(weights_only=True)``: tensors and plain containers only; a file
    holding any other object is refused, never unpickled. A file that is not an MRM checkpoint
    raises :class:`~mrm_lightning.training.checkpoint_file.CheckpointError` naming it and
    saying what is wrong (:func:`~mrm_lightning.training.checkpoint_file.read_checkpoint`)."""
    return read_checkpoint(path)


class NonFiniteReward(ValueError):
    """A reward came out NaN or infinite: a damaged profile or checkpoint (the server answers
    500: not the request's fault; the command line, one error line)."""


class PersonalizedRewardModel(UserPosteriors):
    """A trained MRM checkpoint, ready to adapt to users and score responses.

    Args:
        model: the rebuilt module (eval mode, frozen).
        digest: sha256 of the checkpoint file.
        encoder: the checkpoint's :func:`~mrm_lightning.data.encoder.encoder_record`, None for
            an embedding-only model.
        device: where the encoder runs (``auto``: CUDA if available).
        cache_dir: an embedding cache (the training cache works: same keys); None: no cache.
        progress: show the encoder's progress bar.
        columns: the checkpoint's :func:`~mrm_lightning.data.sources.columns.columns_record`:
            the training files' column names, which ``mrm adapt`` and ``mrm score`` read new
            users' files with; None where training read no such files.
        prior_precision: the Laplace posterior's prior precision around w0 (gradient
            adaptation; :mod:`.user_uncertainty`).
    """

    def __init__(
        self,
        model: MetaRewardModel,
        digest: str,
        encoder: dict | None = None,
        device: str = "auto",
        cache_dir: str | None = None,
        progress: bool = False,
        columns: dict | None = None,
        prior_precision: float = DEFAULT_PRIOR_PRECISION,
    ) -> None:
        if not prior_precision > 0:
            raise ValueError(f"prior_precision must be > 0, got {prior_precision}")
        self.model, self.digest, self.encoder_info = model, digest, encoder
        self.columns, self.prior_precision = columns, float(prior_precision)
        # of the posterior's win probabilities, sigmoid(logit(p) / T): chosen on validation
        self.temperature = 1.0
        self.device, self.cache_dir, self.progress = device, cache_dir, progress
        self._encoder: TextEncoder | None = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        cache_dir: str | None = None,
        progress: bool = False,
        prior_precision: float | None = None,
    ) -> PersonalizedRewardModel:
        """Load ``path`` safely (weights only) and rebuild the model it was saved from."""
        checkpoint, digest = load_checkpoint(path)
        settings = model_settings(path, checkpoint)
        try:
            model = MetaRewardModel(**settings)
        except (ValueError, TypeError) as error:
            raise CheckpointError(path, f"its model settings are refused: {error}") from None
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:  # missing, unexpected or mis-shaped weights
            first = (str(error).strip().splitlines() or ["RuntimeError"])[0]
            raise CheckpointError(
                path, f"its weights do not fit the model its settings describe ({first})"
            ) from None
        model.eval().requires_grad_(False)
        encoder = checkpoint.get("mrm_encoder")
        columns = checkpoint.get("mrm_columns")
        if prior_precision is None:  # chosen on validation (checkpoints before it: 1)
            prior_precision = float(model.selected_prior_precision)
        made = cls(model, digest, encoder, device, cache_dir, progress, columns, prior_precision)
        made.temperature = float(model.selected_temperature)  # likewise
        return made

    # ------------------------------------------------------------ what it is
    @property
    def uses_warm_start(self) -> bool:
        """True where validation chose the global model (the warm start): no adaptation."""
        return bool(self.model.selected_warm_start)

    def inner_settings(self) -> dict:
        hp = self.model.hparams
        lr = 0.0 if self.uses_warm_start else hp.inner_lr * float(self.model.selected_lr_scale)
        return {
            "steps": int(hp.inner_steps),
            "lr": float(lr),
            # "posterior": the weights are Bayes' rule over the base functions, not steps
            "optimizer": "posterior"
            if getattr(hp, "adaptation", "gradient") == "posterior"
            else str(hp.inner_optimizer),
            "proximal": float(hp.inner_proximal),
            "warm_start": self.uses_warm_start,
        }

    def standardization(self) -> dict:
        rewards = self.model.base_rewards
        return {
            "fitted_scale": float(rewards.fitted_scale),
            "input_scale": float(rewards.input_scale),
        }

    def prior(self) -> list[float]:
        """The weights used with no profile: w0, or the warm start's where it was chosen."""
        w0 = self.model.warm_w0 if self.uses_warm_start else self.model.w0
        return [float(w) for w in w0]

    # ------------------------------------------------------------- encoding
    def encoder(self) -> TextEncoder:
        if self.encoder_info is None:
            raise ValueError(
                "this checkpoint was trained on embeddings only (no text encoder is recorded): "
                "give embeddings, not texts"
            )
        if self.encoder_info["init_args"] is None:
            raise ValueError(
                f"the checkpoint's encoder ({self.encoder_info['identity']}) is not a "
                "TextEncoder and cannot be rebuilt: give embeddings, not texts"
            )
        if self._encoder is None:
            encoder = TextEncoder(**self.encoder_info["init_args"], device=self.device)
            recorded, now = self.encoder_info["identity"], encoder.identity()
            differs = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
            if differs == ["dtype"]:
                warnings.warn(
                    f"encoding in {now['dtype']}, the checkpoint's texts were encoded in "
                    f"{recorded['dtype']}: scores may differ slightly",
                    stacklevel=2,
                )
            elif differs:
                raise ValueError(
                    "the encoder differs from the one the checkpoint was trained with in "
                    + ", ".join(f"{k} ({recorded.get(k)!r} -> {now.get(k)!r})" for k in differs)
                )
            self._encoder = encoder
        return self._encoder

    def embed(self, items: Sequence[TextInput]) -> Tensor:
        """``[N, D]`` embeddings of (history, prompt, response) items, cached where asked."""
        if not items:
            return torch.empty(0, int(self.model.hparams.embedding_dim))
        encoder = self.encoder()
        if self.cache_dir is None:
            return encoder.encode(list(items), progress=self.progress)
        from ..data.sources.text import TextPreferences

        source = TextPreferences(encoder, cache_dir=self.cache_dir, progress=self.progress)
        cached = source.embeddings(list(items))
        return cached[torch.arange(len(items))]

    def pair_embeddings(self, pairs: Any) -> tuple[Tensor, Tensor]:
        """``[P, D]`` chosen and rejected embeddings of texts, or of given embeddings."""
        if isinstance(pairs, Mapping) and isinstance(pairs.get("chosen"), Tensor):
            chosen, rejected = pairs["chosen"], pairs["rejected"]
            dim = int(self.model.hparams.embedding_dim)
            if chosen.ndim != 2 or chosen.shape != rejected.shape or chosen.shape[1] != dim:
                raise ValueError(
                    f"pair embeddings must be two [P, {dim}] tensors, got "
                    f"{tuple(chosen.shape)} and {tuple(rejected.shape)}"
                )
            return chosen.float(), rejected.float()
        texts = [_text_pair(pair) for pair in pairs]
        rows: dict[TextInput, int] = {}
        for history, prompt, *responses in texts:
            for response in responses:
                rows.setdefault((history, prompt, response), len(rows))
        vectors = self.embed(list(rows))
        chosen = [rows[(h, p, c)] for h, p, c, _ in texts]
        rejected = [rows[(h, p, r)] for h, p, _, r in texts]
        return vectors[torch.tensor(chosen, dtype=torch.long)], vectors[
            torch.tensor(rejected, dtype=torch.long)
        ]

    # ------------------------------------------------------------ adaptation
    def adapt(self, pairs: Any) -> UserProfile:
        """One user's profile from their pairs (none gives the prior).

        ``pairs`` is either a sequence of pairs of texts, each a mapping or an object with
        these attributes (a :class:`~mrm_lightning.data.records.PreferenceRecord` works):

        - ``prompt``, ``chosen``, ``rejected``: strings, required (the user preferred
          ``chosen`` over ``rejected`` as the answer to ``prompt``);
        - ``history``: optional, the earlier turns of the conversation as ``(role, content)``
          pairs or ``{"role": ..., "content": ...}`` dicts, oldest first;
        - any other key (``user_id``, ``split``, ``unit``) is ignored;

        or a mapping of embeddings, ``{"chosen": Tensor[P, D], "rejected": Tensor[P, D]}``.
        """
        return self.adapt_many({"": pairs})[""]

    def adapt_many(self, pairs_by_user: Mapping[str, Any]) -> dict[str, UserProfile]:
        """Every user's profile in one batched inner loop (pairs padded, with a mask)."""
        users = list(pairs_by_user)
        embedded = [self.pair_embeddings(pairs_by_user[u]) for u in users]
        sizes = [len(chosen) for chosen, _ in embedded]
        dim, most = int(self.model.hparams.embedding_dim), max(sizes, default=0)
        batch = {
            "support_chosen": torch.zeros(len(users), most, dim),
            "support_rejected": torch.zeros(len(users), most, dim),
            "support_mask": torch.zeros(len(users), most, dtype=torch.bool),
        }
        for row, ((chosen, rejected), size) in enumerate(zip(embedded, sizes)):
            batch["support_chosen"][row, :size] = chosen
            batch["support_rejected"][row, :size] = rejected
            batch["support_mask"][row, :size] = True
        if self.uses_warm_start or not users:  # validation chose the global model: no adapting
            weights = torch.tensor([self.prior()] * len(users))
        else:
            with torch.inference_mode(False), torch.enable_grad():  # the inner loop's gradients
                weights = self.model.adapt_users(
                    batch, first_order=True, lr_scale=float(self.model.selected_lr_scale)
                ).detach()
        posteriors = self._posteriors(weights, batch)
        made = datetime.now(timezone.utc).isoformat()  # noqa: UP017 (3.10 has no datetime.UTC)
        common = dict(
            checkpoint=self.digest,
            encoder=None if self.encoder_info is None else self.encoder_info["identity"],
            standardization=self.standardization(),
            inner=self.inner_settings(),
            created_at=made,
        )
        return {
            user: UserProfile(
                weights=[float(w) for w in row], num_pairs=size, posterior=posterior, **common
            )
            for user, row, size, posterior in zip(users, weights, sizes, posteriors)
        }

    # --------------------------------------------------------------- scoring
    def check_profile(self, profile: UserProfile) -> None:
        """Refuse a malformed profile, or one made by another checkpoint, encoder or scale."""
        profile.check()
        mine = {
            "checkpoint digest": self.digest,
            "encoder identity": None
            if self.encoder_info is None
            else self.encoder_info["identity"],
            "input standardisation": self.standardization(),
            "warm start": self.uses_warm_start,
        }
        theirs = {
            "checkpoint digest": profile.checkpoint,
            "encoder identity": profile.encoder,
            "input standardisation": profile.standardization,
            "warm start": profile.inner.get("warm_start"),
        }
        differs = [k for k in mine if mine[k] != theirs[k]]
        if differs:
            raise ProfileError(
                "the profile was made by another model; it differs in "
                + "; ".join(f"{k}: profile {theirs[k]!r}, model {mine[k]!r}" for k in differs)
            )
        if len(profile.weights) != len(self.prior()):
            raise ProfileError(
                f"the profile has {len(profile.weights)} weights, the model "
                f"{len(self.prior())} base reward functions"
            )

    @property
    def combination(self) -> str:
        return str(self.model.hparams.combination)

    @torch.no_grad()
    def base_of(self, embeddings: Tensor) -> Tensor:
        """``[..., K]`` the base rewards of ``[..., D]`` embeddings."""
        embeddings = embeddings.float()
        if self.uses_warm_start:  # the global model's base functions (see warm_start_margins)
            return torch.nn.functional.linear(
                embeddings * self.model.base_rewards.scale, self.model.warm_weight
            )
        return self.model.base_rewards(embeddings)

    @torch.no_grad()
    def score_embeddings(
        self, embeddings: Tensor, profile: UserProfile | None = None
    ) -> list[float]:
        """The user's reward of each of ``[N, D]`` response embeddings (no profile: the prior)."""
        if profile is not None:
            self.check_profile(profile)
        dim = int(self.model.hparams.embedding_dim)
        if embeddings.ndim != 2 or embeddings.shape[1] != dim:
            raise ValueError(f"embeddings must be [N, {dim}], got {tuple(embeddings.shape)}")
        base = self.base_of(embeddings)
        weights = torch.tensor(self.prior() if profile is None else profile.weights)
        rewards = combine(weights.unsqueeze(0), base.unsqueeze(0), self.combination)
        return [float(r) for r in rewards[0]]

    def score(
        self,
        prompt: str,
        responses: Sequence[str],
        profile: UserProfile | None = None,
        history: Sequence = (),
    ) -> list[float]:
        """The user's reward of each response to ``prompt`` (no profile: the prior)."""
        turns = tuple((str(r), str(c)) for r, c in _turns(history))
        items = [(turns, prompt, response) for response in responses]
        return self.score_items(items, [profile] * len(items))

    def score_items(
        self, items: Sequence[TextInput], profiles: Sequence[UserProfile | None]
    ) -> list[float]:
        """The reward of each (history, prompt, response) under its own profile (None: the
        prior), in one encode call. Each distinct profile is checked once, before any
        encoding; items sharing a profile are scored together (the server and TRL use this
        for batches of many users)."""
        groups = profile_groups(items, profiles)
        for profile, _ in groups:
            if profile is not None:
                self.check_profile(profile)
        return self._grouped_rewards(self.embed(list(items)), groups)

    def _grouped_rewards(self, vectors: Tensor, groups: list[tuple]) -> list[float]:
        """Each row of ``[N, D]`` ``vectors`` scored under its group's profile, all finite."""
        rewards = [0.0] * len(vectors)
        for profile, rows in groups:
            for row, reward in zip(rows, self.score_embeddings(vectors[rows], profile)):
                rewards[row] = reward
        bad = [row for row, reward in enumerate(rewards) if not math.isfinite(reward)]
        if bad:  # never a NaN or inf handed on to a trainer (or null in a JSON answer)
            raise NonFiniteReward(
                f"item {bad[0]}: the reward is {rewards[bad[0]]} ({len(bad)} of {len(rewards)} "
                "items not finite): the profile or the checkpoint is damaged"
            )
        return rewards

    def rank(
        self,
        prompt: str,
        responses: Sequence[str],
        profile: UserProfile | None = None,
        history: Sequence = (),
    ) -> tuple[list[int], list[float]]:
        """Indices of the responses best first, and their scores in the input order."""
        scores = self.score(prompt, responses, profile, history)
        return ranking(scores), scores


def ranking(scores: Sequence[float]) -> list[int]:
    """Indices by score, best first (ties keep the input order)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])
