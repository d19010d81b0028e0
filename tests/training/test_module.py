"""The LightningModule: gradients reach the meta-parameters, a step changes them."""

import pytest
import torch

from mrm_lightning import EpisodicDataModule, MetaRewardModel, SyntheticPopulation


@pytest.fixture
def datamodule():
    dm = EpisodicDataModule(
        SyntheticPopulation(
            num_users=16, embedding_dim=6, num_directions=2, min_pairs=20, max_pairs=30
        ),
        users_per_batch=4,
        support_size=5,
        max_train_pairs_unseen=8,
    )
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradients_reach_w0_and_the_base_functions(datamodule, first_order):
    model = MetaRewardModel(
        embedding_dim=6, num_base_rewards=3, inner_steps=2, first_order=first_order
    )
    batch = next(iter(datamodule.train_dataloader()))
    model.training_step(batch, 0).backward()
    assert model.w0.grad.abs().sum() > 0
    assert model.base_rewards.net.weight.grad.abs().sum() > 0


def test_an_optimizer_step_changes_the_meta_parameters(datamodule):
    model = MetaRewardModel(embedding_dim=6, num_base_rewards=3)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.training_step(next(iter(datamodule.train_dataloader())), 0).backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def eval_accuracies(model, datamodule):
    model.log = lambda *args, **kwargs: None  # no Trainer here
    for batch in datamodule.test_dataloader():
        model.test_step(batch, 0)
    metrics = model.test_metrics["all"]
    return metrics["user_acc"].compute(), metrics["user_acc_w0"].compute()


def test_zero_inner_steps_is_w0_for_everyone(datamodule):
    adapted, w0 = eval_accuracies(MetaRewardModel(embedding_dim=6, inner_steps=0), datamodule)
    assert adapted == w0


def test_adaptation_changes_predictions(datamodule):
    torch.manual_seed(0)
    model = MetaRewardModel(embedding_dim=6, combination="linear", inner_steps=3, inner_lr=5.0)
    for batch in datamodule.val_dataloader():
        weights = model.adapt_users(batch, first_order=True)
        assert (weights - model.w0).abs().max() > 1e-3


def test_evaluation_under_inference_mode_explains_the_fix(datamodule):
    model = MetaRewardModel(embedding_dim=6)
    batch = next(iter(datamodule.val_dataloader()))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode=false"):
        model.validation_step(batch, 0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(inner_steps=-1), "inner_steps"),
        (dict(combination="max"), "combination"),
        (dict(num_base_rewards=0), "num_base_rewards"),
        (dict(inner_optimizer="rmsprop"), "inner_optimizer"),
    ],
)
def test_bad_model_settings_name_the_setting(bad, match):
    with pytest.raises(ValueError, match=match):
        MetaRewardModel(embedding_dim=6, **bad)


def test_validation_scores_every_adaptation_strength_and_keeps_the_best(datamodule):
    torch.manual_seed(0)
    model = MetaRewardModel(
        embedding_dim=6,
        combination="linear",
        inner_steps=3,
        inner_lr=5.0,
        adaptation_lr_scales=(0.0, 1.0),
    )
    logged = {}
    model.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    for batch in datamodule.val_dataloader():
        model.validation_step(batch, 0)
    no_adaptation = float(model.val_metrics["all"]["user_acc_0"].compute())
    full = float(model.val_metrics["all"]["user_acc_1"].compute())
    assert no_adaptation == float(model.val_metrics["all"]["user_acc_w0"].compute())
    model.on_validation_epoch_end()
    best = max(no_adaptation, full)
    assert logged["val/user_acc"] == pytest.approx(best)
    assert float(model.selected_lr_scale) == (1.0 if full > no_adaptation else 0.0)
    assert model.selection_accuracy.tolist() == pytest.approx([no_adaptation, full])
    assert not model.val_metrics["all"]["user_acc_0"].update_called  # reset for the next epoch
