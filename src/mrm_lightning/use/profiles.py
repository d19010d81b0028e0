"""User profiles: one user's adapted weights and what produced them, as JSON and in a store.

A :class:`UserProfile` is what :class:`mrm_lightning.use.inference.PersonalizedRewardModel` makes
from a user's pairs. It names the checkpoint (sha256 of the file), the encoder and the input
standardisation it was made with, so that a model refuses a profile made by another one.
Its JSON keeps every float exactly (Python writes the shortest text that reads back to the same
double), so ``UserProfile.from_json(p.to_json()) == p``.

Profiles are kept, keyed by user id, in a :class:`mrm_lightning.use.store.ProfileStore`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from .store_schema import StoreError

# 2 added ``posterior``; a version-1 profile reads as one without it (no uncertainty)
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
POSTERIOR_KINDS = ("laplace", "categorical")
INNER_KEYS = ("steps", "lr", "optimizer", "proximal", "warm_start")
STANDARDIZATION_KEYS = ("fitted_scale", "input_scale")


class ProfileError(ValueError):
    """A profile that is malformed, or made by another checkpoint, encoder or scale."""


class ProfileDamaged(ProfileError):
    """A stored profile whose row fails its checksum: changed outside the store."""


class VersionConflict(ProfileError):
    """A write based on a version of the profile that is no longer the stored one."""


__all__ = [
    "ProfileDamaged",
    "ProfileError",
    "StoreError",
    "UserProfile",
    "VersionConflict",
    "profile_groups",
]


# Adapted weights over standardised base rewards are a few units; far beyond that a profile is
# damaged or forged (1e308 passes the finite check and scores inf, then NaN).
MAX_WEIGHT = 1e6


@dataclass(frozen=True)
class UserProfile:
    """A user's adapted weights over the K base reward functions, and their provenance.

    Attributes:
        weights: the K adapted weights (the prior's own where nothing was adapted).
        checkpoint: sha256 of the checkpoint file that made them.
        encoder: the identity of the encoder texts were embedded with; None for a model trained
            on embeddings only.
        standardization: ``fitted_scale`` and ``input_scale`` of the model's inputs.
        num_pairs: how many pairs the user gave.
        inner: the adaptation used: ``steps``, ``lr`` (the learning rate actually used),
            ``optimizer``, ``proximal``, ``warm_start`` (True: the global model, no adaptation).
        created_at: ISO 8601 UTC time of making.
        format_version: of this structure.
        posterior: how sure the model is about the weights (:mod:`.user_uncertainty`):
            ``{"kind": "laplace", "covariance": K x K, "prior_precision": float}`` (gradient
            adaptation: a Gaussian around ``weights``), ``{"kind": "categorical"}``
            (posterior adaptation: ``softmax(weights)`` is the exact posterior over the base
            functions), or None (none known: the global model, or a version-1 profile).
    """

    weights: list[float]
    checkpoint: str
    encoder: dict[str, Any] | None
    standardization: dict[str, float]
    num_pairs: int
    inner: dict[str, Any]
    created_at: str
    format_version: int = FORMAT_VERSION
    posterior: dict[str, Any] | None = None

    def to_json(self) -> str:
        """One line of JSON; floats written exactly, NaN or infinity refused."""
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> UserProfile:
        """Parse and check a profile; anything malformed raises :class:`ProfileError`."""
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, ProfileError) as error:
            raise ProfileError(f"profile is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ProfileError("profile must be a JSON object")
        if data.get("format_version") == 1 and "posterior" not in data:
            data = {**data, "format_version": FORMAT_VERSION, "posterior": None}
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ProfileError(f"profile fields: missing {missing}, unknown {unknown}")
        profile = cls(**data)
        profile.check()
        return profile

    def check(self) -> None:
        """Raise :class:`ProfileError` naming the first field that is malformed."""
        if self.format_version != FORMAT_VERSION:
            raise ProfileError(
                f"profile format_version {self.format_version!r}, this version reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        weights = self.weights
        if not isinstance(weights, list) or not weights or not all(_is_number(w) for w in weights):
            raise ProfileError("profile field 'weights' must be a non-empty list of numbers")
        if not all(math.isfinite(w) for w in weights):
            raise ProfileError("profile field 'weights' holds a non-finite value")
        if max(abs(w) for w in weights) > MAX_WEIGHT:  # finite, yet rewards overflow to inf
            raise ProfileError(f"profile field 'weights' holds a value beyond ±{MAX_WEIGHT:g}")
        if not isinstance(self.checkpoint, str) or len(self.checkpoint) != 64:
            raise ProfileError("profile field 'checkpoint' must be a sha256 hex digest")
        if self.encoder is not None and not isinstance(self.encoder, dict):
            raise ProfileError("profile field 'encoder' must be an object or null")
        scale = self.standardization
        if not isinstance(scale, dict) or sorted(scale) != sorted(STANDARDIZATION_KEYS):
            raise ProfileError(f"profile field 'standardization' needs {STANDARDIZATION_KEYS}")
        if not all(_is_number(v) and math.isfinite(v) for v in scale.values()):
            raise ProfileError("profile field 'standardization' must hold finite numbers")
        if not isinstance(self.inner, dict) or sorted(self.inner) != sorted(INNER_KEYS):
            raise ProfileError(f"profile field 'inner' needs {INNER_KEYS}")
        if not isinstance(self.num_pairs, int) or self.num_pairs < 0:
            raise ProfileError("profile field 'num_pairs' must be an integer >= 0")
        if not isinstance(self.created_at, str):
            raise ProfileError("profile field 'created_at' must be a string")
        self._check_posterior()

    def _check_posterior(self) -> None:
        posterior, k = self.posterior, len(self.weights)
        if posterior is None:
            return
        if not isinstance(posterior, dict) or posterior.get("kind") not in POSTERIOR_KINDS:
            raise ProfileError(f"profile field 'posterior' needs a 'kind' of {POSTERIOR_KINDS}")
        if posterior["kind"] == "categorical":
            if sorted(posterior) != ["kind"]:
                raise ProfileError("profile field 'posterior': a categorical one has only 'kind'")
            return
        if sorted(posterior) != ["covariance", "kind", "prior_precision"]:
            raise ProfileError(
                "profile field 'posterior': a laplace one needs 'covariance' and 'prior_precision'"
            )
        cov, precision = posterior["covariance"], posterior["prior_precision"]
        if not (
            isinstance(cov, list)
            and len(cov) == k
            and all(isinstance(row, list) and len(row) == k for row in cov)
            and all(_is_number(v) and math.isfinite(v) for row in cov for v in row)
        ):
            raise ProfileError(
                f"profile field 'posterior': 'covariance' must be {k} x {k} finite numbers"
            )
        symmetric = all(
            abs(cov[i][j] - cov[j][i]) <= 1e-9 * (1 + abs(cov[i][j]))
            for i in range(k)
            for j in range(i)
        )
        if not symmetric or any(cov[i][i] < 0 or cov[i][i] > MAX_WEIGHT for i in range(k)):
            raise ProfileError(
                "profile field 'posterior': 'covariance' must be symmetric with variances in "
                f"[0, {MAX_WEIGHT:g}]"
            )
        if not (_is_number(precision) and 0 < precision < math.inf):
            raise ProfileError("profile field 'posterior': 'prior_precision' must be > 0")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse_constant(name: str) -> float:
    raise ProfileError(f"{name} is not a finite number")


def profile_groups(
    items: Sequence[Any], profiles: Sequence[UserProfile | None]
) -> list[tuple[UserProfile | None, list[int]]]:
    """The distinct profiles (by identity) and the rows of ``items`` each scores."""
    if len(items) != len(profiles):
        raise ValueError(f"{len(items)} items but {len(profiles)} profiles")
    groups: dict[int, tuple[UserProfile | None, list[int]]] = {}
    for row, profile in enumerate(profiles):
        groups.setdefault(id(profile), (profile, []))[1].append(row)
    return list(groups.values())
