"""The MRM module's settings checked at construction: each error names the ``model.*`` setting.

Kept out of :mod:`.module` so that the module reads as the method; the settings themselves
are the module's constructor arguments (the config schema).
"""

from __future__ import annotations

from collections.abc import Mapping


def check_model_settings(hp: Mapping) -> None:
    """Raise ``ValueError`` naming the first ``model.*`` setting that is out of range or
    inconsistent with another."""
    inner_steps = hp["inner_steps"]
    inner_lr = hp["inner_lr"]
    combination = hp["combination"]
    inner_optimizer = hp["inner_optimizer"]
    adaptation_lr_scales = hp["adaptation_lr_scales"]
    adaptation = hp["adaptation"]
    prior_pull = hp["prior_pull"]
    inner_proximal = hp["inner_proximal"]
    warm_start_alpha = hp["warm_start_alpha"]
    mixture_warm_start = hp["mixture_warm_start"]
    hidden_dim = hp["hidden_dim"]
    mixture_l2_grid = hp["mixture_l2_grid"]
    principal_ranks = hp["principal_ranks"]
    embedding_dim = hp["embedding_dim"]
    if inner_steps < 0:
        raise ValueError(f"model.inner_steps must be >= 0, got {inner_steps}")
    temperatures = hp["posterior_temperatures"]
    if not temperatures or not all(t > 0 for t in temperatures):
        raise ValueError(
            f"model.posterior_temperatures must be one or more values > 0, got {temperatures}"
        )
    precisions = hp["posterior_prior_precisions"]
    if not precisions or not all(p > 0 for p in precisions):
        raise ValueError(
            f"model.posterior_prior_precisions must be one or more values > 0, got {precisions}"
        )
    if inner_lr < 0:
        raise ValueError(f"model.inner_lr must be >= 0, got {inner_lr}")
    if combination not in ("softmax", "linear"):
        raise ValueError(f"model.combination must be 'softmax' or 'linear', got {combination!r}")
    if inner_optimizer not in ("sgd", "adam"):
        raise ValueError(f"model.inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
    if adaptation not in ("gradient", "posterior"):
        raise ValueError(f"model.adaptation must be 'gradient' or 'posterior', got {adaptation!r}")
    if adaptation == "posterior" and combination != "softmax":
        raise ValueError(
            "model.adaptation 'posterior' reads softmax(w0) as a prior over the base "
            f"functions: it needs model.combination 'softmax', got {combination!r}"
        )
    if not adaptation_lr_scales or min(adaptation_lr_scales) < 0:
        raise ValueError(
            f"model.adaptation_lr_scales must be non-empty and >= 0, got {adaptation_lr_scales}"
        )
    if prior_pull < 0:
        raise ValueError(f"model.prior_pull must be >= 0, got {prior_pull}")
    if inner_proximal < 0:
        raise ValueError(f"model.inner_proximal must be >= 0, got {inner_proximal}")
    if not 0 < warm_start_alpha < 1:
        raise ValueError(f"model.warm_start_alpha must be in (0, 1), got {warm_start_alpha}")
    if mixture_warm_start and (hidden_dim or not mixture_l2_grid or prior_pull):
        raise ValueError(
            "model.mixture_warm_start needs linear base functions (hidden_dim 0), a "
            "non-empty model.mixture_l2_grid, and prior_pull 0 (which pulls towards the "
            "global model's start)"
        )
    if not principal_ranks or min(principal_ranks) < 0 or max(principal_ranks) > embedding_dim:
        raise ValueError(
            f"model.principal_ranks must be in [0, embedding_dim={embedding_dim}], "
            f"got {principal_ranks}"
        )
    if max(principal_ranks) and hidden_dim:
        raise ValueError("model.principal_ranks restricts linear base functions: hidden_dim 0")
    if len(set(principal_ranks)) > 1 and not mixture_warm_start:
        raise ValueError(
            "several model.principal_ranks are chosen among by the mixture start: set "
            "model.mixture_warm_start true, or give one rank"
        )
