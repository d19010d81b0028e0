"""Before meta-training: what MRM fits on the data module's data, in order.

1. The input scale (``standardize_inputs``): training differences to unit RMS per dimension.
2. The global warm start (``warm_start``): the global Bradley-Terry model, kept as the fallback
   candidate (``warm_weight``, ``warm_w0``) and as the base functions' start.
3. The principal subspace (``principal_ranks``): the leading principal directions of the
   training differences, the basis the base functions may be restricted to.
4. The mixture start (``mixture_warm_start``): a latent-class Bradley-Terry model's class
   directions as the base functions and its class proportions as w0, the rank and L2 chosen on
   validation users scored as new users.

Everything is fitted on the seen users' training pairs (a seeded sample of at most
``fit_sample_pairs``); validation pairs only choose. A resumed run restores its checkpoint over
all of it. Writes the
:class:`.module.MetaRewardModel`'s parameters and buffers.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from ..data.preferences import PreferenceData
from ..data.splits import TRAIN, VAL
from ..method.mixture import choose_mixture
from ..method.subspace import PrincipalSubspace, leading_directions
from ..method.warm_start import scale_for_mean_square, warm_start_rows
from .baselines import (
    difference_second_moment,
    global_reward_model,
    mean_square_difference,
    pair_differences,
    sample_pairs,
)


def initialize_from_data(model, datamodule) -> None:
    """Fit, in order, what the model's settings ask for (module docstring)."""
    hp = model.hparams
    wanted = (hp.standardize_inputs, hp.warm_start, hp.mixture_warm_start, max(hp.principal_ranks))
    if not any(wanted):
        return
    # a seeded sample keeps the fits cheap
    train = sample_pairs(datamodule.pairs(TRAIN, datamodule.meta_train_users), hp.fit_sample_pairs)
    if hp.standardize_inputs:  # without all the differences in memory at once
        scale = scale_for_mean_square(mean_square_difference(train))
        model.base_rewards.fitted_scale.fill_(scale)
    if hp.warm_start and hp.hidden_dim == 0:
        # the run's global model, the very fit the report's global row shows
        direction, _ = global_reward_model(datamodule, hp.fit_sample_pairs)
        layer = model.base_rewards.net
        # the fit is on raw embeddings: undo the scale. The fallback stays the global model
        # itself, even where the base functions are restricted to a subspace.
        rows = warm_start_rows(free_weight(layer), direction / model.base_rewards.scale)
        with torch.no_grad():
            set_free_weight(layer, rows)
            model.warm_weight.copy_(rows)
            model.warm_w0.copy_(model.w0)
            model.has_warm_start.fill_(True)
    subspace = principal_subspace(model)
    if subspace is not None:
        basis = leading_directions(difference_second_moment(train), subspace.basis.shape[1])
        subspace.basis.copy_(basis)
        subspace.rank.fill_(hp.principal_ranks[0])
    if hp.mixture_warm_start:
        start_from_mixture(model, datamodule, train)


def principal_subspace(model) -> PrincipalSubspace | None:
    """The linear layer's :class:`PrincipalSubspace` parametrization, if it has one."""
    parametrizations = getattr(model.base_rewards.net, "parametrizations", None)
    return None if parametrizations is None else parametrizations.weight[0]


def free_weight(layer: nn.Module) -> Tensor:
    """The weight the optimizer moves (before any subspace projection)."""
    parametrizations = getattr(layer, "parametrizations", None)
    return layer.weight if parametrizations is None else parametrizations.weight.original


def set_free_weight(layer: nn.Module, value: Tensor) -> None:
    with torch.no_grad():
        free_weight(layer).copy_(value)


def start_from_mixture(model, datamodule, train: PreferenceData) -> None:
    """Base functions at the K class directions of a latent-class Bradley-Terry model fitted on
    ``train`` (in the principal subspace of each candidate rank), w0 at its class proportions.
    The rank and L2 are chosen on the validation users, scored as new users: a posterior from
    their training pairs, accuracy on their held-out validation pairs
    (:func:`mrm_lightning.method.mixture.choose_mixture`); a tie keeps the earlier rank."""
    hp = model.hparams
    scale = float(model.base_rewards.scale)  # the fit sees the inputs the layer sees
    users = datamodule.eval_users(VAL)
    train_rows, held_out = datamodule.pairs_by_split[TRAIN], datamodule.held_out(VAL)

    def of_users(rows: list[Tensor]) -> tuple[Tensor, Tensor]:  # user i of ``users`` -> i
        data = datamodule.data.subset(torch.cat([torch.empty(0, dtype=torch.long), *rows]))
        index = torch.arange(len(rows)).repeat_interleave(torch.tensor([len(r) for r in rows]))
        return pair_differences(data) * scale, index

    sets = (
        (pair_differences(train) * scale, torch.unique(train.user, return_inverse=True)[1]),
        of_users([train_rows[u] for u in users]),
        of_users([held_out[u] for u in users]),
    )
    subspace = principal_subspace(model)
    best, tried = None, []
    for rank in dict.fromkeys(hp.principal_ranks):  # in order, without repeats
        basis = subspace.basis[:, :rank] if rank else None
        projected = [(d if basis is None else d @ basis, i) for d, i in sets]
        mixture, l2, accuracies = choose_mixture(
            *projected,
            hp.num_base_rewards,
            tuple(hp.mixture_l2_grid),
            generator=torch.Generator().manual_seed(0),
        )
        tried += [
            f"rank {rank or 'all'} L2 {g:g}: {a:.3f}"
            for g, a in zip(hp.mixture_l2_grid, accuracies)
        ]
        score = max(accuracies)
        if best is None or score > best[0]:
            components = mixture.components if basis is None else mixture.components @ basis.T
            best = (score, rank, l2, components, mixture.proportions)
    _, rank, l2, components, proportions = best
    proportions = proportions.to(model.w0.dtype)
    with torch.no_grad():
        if subspace is not None:
            subspace.rank.fill_(rank)
        model.mixture_l2.fill_(l2)
        set_free_weight(model.base_rewards.net, components)
        if hp.combination == "softmax":  # softmax(w0) = the proportions
            log_share = proportions.clamp_min(1e-3).log()
            model.w0.copy_(log_share - log_share.mean())
        else:
            model.w0.copy_(proportions)
    rank_zero_info(
        f"Mixture start: rank {rank or 'all'}, L2 {l2:g}, chosen on validation users "
        f"({'; '.join(tried)}); class proportions "
        + ", ".join(f"{p:.2f}" for p in proportions.tolist())
    )
