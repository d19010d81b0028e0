"""Every benchmarked method (the peers, MRM with and without RPO) trains on a small synthetic
population and beats chance on users it can represent; the global model, which cannot
represent opposite tastes, stays at chance there."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from mrm_lightning import (
    EpisodicDataModule,
    MetaRewardModel,
    RobustPersonalization,
    SyntheticPopulation,
)
from mrm_lightning.peers import PAL, VPL, FineTunedGlobal, GlobalRewardModel, LoRe, PerUserModel

D = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is several times faster on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def population(clusters: int, shared: float) -> EpisodicDataModule:
    """60 users of ``clusters`` taste types, no hard users, little label noise.

    With 2 clusters and no shared direction, the two types' tastes are opposite (cluster
    centres are centred): a single reward for everybody is at chance.
    """
    source = SyntheticPopulation(
        num_users=60,
        embedding_dim=D,
        num_directions=2,
        num_clusters=clusters,
        shared_strength=shared,
        cluster_spread=0.2,
        sharpness=4.0,
        hard_user_fraction=0.0,
        min_pairs=30,
        max_pairs=50,
        seed=0,
    )
    return EpisodicDataModule(
        source,
        users_per_batch=8,
        support_size=10,
        max_train_pairs_unseen=20,
        validation_users=0.2,
        eval_users_per_batch=64,
        seed=0,
    )


def fit_and_test(model, datamodule, epochs: int, callbacks=()) -> dict[str, float]:
    seed_everything(0, verbose=False)
    closed_form = epochs == 0
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=max(epochs, 1),
        limit_train_batches=1 if closed_form else 1.0,
        check_val_every_n_epoch=max(epochs, 1),
        num_sanity_val_steps=0,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}  # val/... of the fit
    trainer.test(model, datamodule=datamodule, verbose=False)
    return metrics | {k: float(v) for k, v in trainer.callback_metrics.items()}


def adam(lr: float):
    return partial(torch.optim.Adam, lr=lr)


def mrm() -> MetaRewardModel:
    return MetaRewardModel(
        embedding_dim=D, num_base_rewards=2, combination="linear", inner_steps=5, inner_lr=1.0
    )


# (method, epochs; 0 = fitted in closed form, population: clusters, shared direction)
METHODS = {
    "global": (lambda: GlobalRewardModel(embedding_dim=D), 0, (1, 0.5)),
    "per_user": (lambda: PerUserModel(embedding_dim=D), 0, (2, 0.0)),
    "finetune": (lambda: FineTunedGlobal(embedding_dim=D), 0, (2, 0.0)),
    "lore": (lambda: LoRe(embedding_dim=D, num_base_rewards=2, optimizer=adam(0.03)), 40, (2, 0.0)),
    "pal": (lambda: PAL(embedding_dim=D, num_base_rewards=2, optimizer=adam(0.03)), 40, (2, 0.0)),
    "vpl": (lambda: VPL(embedding_dim=D, latent_dim=2, optimizer=adam(0.01)), 40, (2, 0.0)),
    "mrm": (mrm, 20, (2, 0.0)),
    "mrm_rpo": (mrm, 20, (2, 0.0)),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_beats_chance_on_users_it_can_represent(method):
    make, epochs, (clusters, shared) = METHODS[method]
    callbacks = [RobustPersonalization()] if method == "mrm_rpo" else []
    metrics = fit_and_test(make(), population(clusters, shared), epochs, callbacks)
    assert metrics["test_unseen/user_acc"] > 0.6, metrics
    assert metrics["test_seen/user_acc"] > 0.6, metrics
    assert 0.0 <= metrics["val/user_acc"] <= 1.0
    assert metrics["hp_metric"] == pytest.approx(metrics["val/user_acc"])


def test_global_model_is_at_chance_where_tastes_are_opposite():
    """The check above can fail: one reward for everybody cannot fit opposite types."""
    metrics = fit_and_test(GlobalRewardModel(embedding_dim=D), population(2, 0.0), 0)
    assert metrics["test_unseen/user_acc"] < 0.6, metrics


def test_finetuning_chooses_its_strength_on_validation_and_keeps_it():
    """Where tastes are opposite, validation picks a non-zero step; the test uses the pick."""
    model = FineTunedGlobal(embedding_dim=D)
    fit_and_test(model, population(2, 0.0), 0)
    assert int(model.selected) > 0  # 0 would be the global model itself
    assert float(model.selected_val_accuracy) > 0.6


def test_new_users_fit_only_their_weights_with_the_basis_frozen():
    model = LoRe(embedding_dim=D, num_base_rewards=2, optimizer=adam(0.03))
    datamodule = population(2, 0.0)
    fit_and_test(model, datamodule, 5)
    assert model.hparams_initial["method"] == "LoRe"  # compared in TensorBoard's HPARAMS
    basis = model.basis.weight.detach().clone()
    batch = next(iter(datamodule.test_dataloader()))
    with torch.enable_grad():
        model.eval_margins(batch, 1)
    assert torch.equal(model.basis.weight, basis)
    # seen users keep their jointly learned weights; the others are not in the table
    users, seen = batch["user"], batch["is_seen"]
    assert model.trained_user[users[seen]].all()
    assert not model.trained_user[users[~seen]].any()
