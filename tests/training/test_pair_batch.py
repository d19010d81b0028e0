"""The one batch layout MRM reads (PairBatch: the real pairs, packed): gathered and packed as
the padded batches say, and the model's single path through it gives the losses, gradients and
metrics worked out by hand and those of the padded pure functions (the reference)."""

import math

import pytest
import torch

from mrm_lightning import EpisodicDataModule, MetaRewardModel, SyntheticPopulation
from mrm_lightning.data.batch import PairBatch, pack_padded, unpack_pairs
from mrm_lightning.data.buffers import ReusableBuffers
from mrm_lightning.data.gathering import gather_differences, gather_episode
from mrm_lightning.method.losses import bradley_terry_loss
from mrm_lightning.method.maml import adapt, adapt_per_user, pair_margins
from mrm_lightning.method.metrics import UserAccuracy


def make_datamodule(dtype: str = "float32") -> EpisodicDataModule:
    dm = EpisodicDataModule(
        SyntheticPopulation(num_users=16, embedding_dim=6, min_pairs=20, max_pairs=30),
        users_per_batch=4,
        support_size=5,
        max_train_pairs_unseen=8,
        embedding_dtype=dtype,
    )
    dm.setup("fit")
    return dm


# ------------------------------------------------------------------ the layout
def test_pair_margins_of_differences_by_hand():
    weights = torch.tensor([[0.0, torch.log(torch.tensor(3.0))]])  # softmax: 1/4, 3/4
    chosen = torch.tensor([[[2.0, 4.0]]])  # [B=1, P=1, K=2]
    rejected = torch.tensor([[[1.0, 0.0]]])
    # 1/4 * (2 - 1) + 3/4 * (4 - 0) = 3.25
    by_pairs = pair_margins(weights, chosen, rejected, "softmax")
    by_difference = pair_margins(weights, chosen - rejected, None, "softmax")
    assert torch.allclose(by_pairs, torch.tensor([[3.25]]))
    assert torch.allclose(by_difference, torch.tensor([[3.25]]))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_gathered_differences_are_chosen_minus_rejected(dtype, monkeypatch):
    monkeypatch.setattr("mrm_lightning.data.gathering.DIFFERENCE_BLOCK", 2)  # 3 blocks of 5 rows
    data = make_datamodule(dtype).data
    index = torch.tensor([3, 0, 7, 7, 1])
    chosen, rejected = data.chosen[index], data.rejected[index]
    want = torch.stack(
        [data.embeddings[int(c)] - data.embeddings[int(r)] for c, r in zip(chosen, rejected)]
    )
    for buffers in (None, ReusableBuffers()):
        got = gather_differences(data.embeddings, chosen, rejected, buffers)
        assert got.dtype == torch.float32
        assert torch.equal(got, want)
    assert gather_differences(data.embeddings, chosen[:0], rejected[:0]).shape == (0, 6)


def test_unpack_pairs_by_hand():
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, False]])
    values = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]], requires_grad=True)
    got = unpack_pairs(values, mask)
    want = torch.tensor(
        [
            [[1.0, 10.0], [0.0, 0.0], [2.0, 20.0]],
            [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
            [[3.0, 30.0], [4.0, 40.0], [0.0, 0.0]],
        ]
    )
    assert torch.equal(got, want)
    (got * torch.arange(18.0).view(3, 3, 2)).sum().backward()
    assert torch.equal(
        values.grad, torch.tensor([[0.0, 1.0], [4.0, 5.0], [12.0, 13.0], [14.0, 15.0]])
    )


def test_unpack_pairs_without_padding_keeps_every_row_in_order():
    mask = torch.ones(2, 3, dtype=torch.bool)  # fixed-size supports: every place is real
    values = torch.arange(12.0).view(2, 6).T.requires_grad_(True)  # [6, 2], not contiguous
    got = unpack_pairs(values, mask)
    assert torch.equal(got, values.detach().reshape(2, 3, 2))
    (got * torch.arange(12.0).view(2, 3, 2)).sum().backward()
    assert torch.equal(values.grad, torch.arange(12.0).view(6, 2))


def test_an_episode_is_gathered_as_support_then_query_differences():
    data = make_datamodule().data
    support, support_mask = torch.tensor([[3, 1], [2, 0]]), torch.tensor([[1, 1], [1, 0]]).bool()
    query, query_mask = torch.tensor([[5, 0], [6, 7]]), torch.tensor([[1, 0], [1, 1]]).bool()
    users = torch.tensor([11, 4])
    got = gather_episode(data, (support, support_mask, query, query_mask), users)
    real = torch.tensor([3, 1, 2, 5, 6, 7])  # the real pairs, support then query, row-major
    embeddings = data.embeddings
    want = embeddings[data.chosen[real]] - embeddings[data.rejected[real]]
    assert torch.equal(got.chosen, want) and got.rejected is None  # one tensor, one GPU copy
    assert torch.equal(got.query_owner, torch.tensor([0, 1, 1]))  # each query pair's user
    assert got.support_mask is support_mask and got.query_mask is query_mask
    assert got.user is users and got.users == 2
    # training reads no true margins and no seen flags: none are gathered
    assert got.query_oracle_margin is None and got.is_seen is None


def test_split_reads_the_sizes_from_shapes():
    def batch(owner: list[int]) -> PairBatch:
        empty = torch.zeros(2, 0, dtype=torch.bool)
        return PairBatch(torch.zeros(5, 1), None, empty, empty, torch.tensor(owner).long())

    values = torch.arange(10.0).view(5, 2)
    support, query = batch([0, 0, 1]).split(values)
    assert torch.equal(support, values[:2]) and torch.equal(query, values[2:])
    support, query = batch([]).split(values)
    assert torch.equal(support, values) and query.shape == (0, 2)


def test_pack_padded_by_hand():
    def rows(*values: float) -> torch.Tensor:  # [B=2, P=2, D=1]
        return torch.tensor(values).view(2, 2, 1)

    padded = {
        "support_chosen": rows(1, 2, 3, 99),  # user 1's second place is padding
        "support_rejected": rows(0, 1, 1, 99),
        "support_mask": torch.tensor([[True, True], [True, False]]),
        "query_chosen": rows(5, 99, 7, 8),
        "query_rejected": rows(1, 99, 2, 4),
        "query_mask": torch.tensor([[True, False], [True, True]]),
        "query_oracle_margin": torch.tensor([[0.5, 99.0], [-1.0, 2.0]]),
        "user": torch.tensor([7, 3]),
        "is_seen": torch.tensor([True, False]),
    }
    both = pack_padded(padded, differences=False)
    assert both.chosen.flatten().tolist() == [1, 2, 3, 5, 7, 8]  # support, then query
    assert both.rejected.flatten().tolist() == [0, 1, 1, 1, 2, 4]
    assert both.query_owner.tolist() == [0, 1, 1]
    assert both.query_oracle_margin.tolist() == [0.5, -1.0, 2.0]
    assert torch.equal(both.user, padded["user"]) and torch.equal(both.is_seen, padded["is_seen"])
    differences = pack_padded(padded, differences=True)
    assert differences.chosen.flatten().tolist() == [1, 1, 2, 4, 5, 4]
    assert differences.rejected is None
    assert differences.pair_rewards(lambda x: 2 * x).flatten().tolist() == [2, 2, 4, 8, 10, 8]
    assert both.pair_rewards(lambda x: 2 * x).flatten().tolist() == [2, 2, 4, 8, 10, 8]
    # a mask cuts pairs out (the benchmark's few-shot supports do): only real pairs are packed
    cut = pack_padded(
        {**padded, "support_mask": torch.tensor([[False, True], [True, False]])}, True
    )
    assert cut.split(cut.chosen)[0].flatten().tolist() == [1, 2]
    # adapting users only (what inference does): a batch of support pairs, no query pairs
    support_only = {k: v for k, v in padded.items() if k.startswith("support")}
    alone = pack_padded(support_only, differences=True)
    assert alone.chosen.flatten().tolist() == [1, 1, 2] and alone.query_mask.shape == (2, 0)
    assert alone.split(alone.chosen)[1].shape == (0, 1)


# --------------------------------------------------------- the step, by hand
def hand_model(**settings) -> MetaRewardModel:
    """D = K = 2, base functions the identity: a pair's base rewards are its difference."""
    model = MetaRewardModel(embedding_dim=2, num_base_rewards=2, **settings)
    with torch.no_grad():
        model.base_rewards.net.weight.copy_(torch.eye(2))
    return model


def hand_batch() -> PairBatch:
    ln3 = math.log(3.0)
    differences = torch.tensor(
        [
            [2.0, -2.0],  # user 0's support pairs
            [2.0, -2.0],
            [0.0, 0.0],  # user 1's (its second place is padding)
            [ln3, ln3],  # user 0's query pair
            [0.0, 0.0],  # user 1's query pairs
            [2 * ln3, 0.0],
        ]
    )
    return PairBatch(
        chosen=differences,
        rejected=None,
        support_mask=torch.tensor([[True, True], [True, False]]),
        query_mask=torch.tensor([[True, False], [True, True]]),
        query_owner=torch.tensor([0, 1, 1]),
    )


def test_the_training_step_by_hand():
    # linear mixing starts at w0 = (1/2, 1/2). One SGD step at lr 1/4 on the mean support loss
    # -log sigmoid(w . d): user 0's pairs have margin 0, so its gradient is
    # -sigmoid(0) * (2, -2) = (-1, 1) and w = (3/4, 1/4); user 1's pair is all zeros, no step.
    model = hand_model(combination="linear", inner_steps=1, inner_lr=0.25)
    losses = []
    model.task_loss_reducer = lambda per_user: losses.append(per_user) or per_user.mean()
    objective = model.training_step(hand_batch(), 0)
    weights = model.adapt_users(hand_batch())
    torch.testing.assert_close(weights, torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    # query margins: user 0, 3/4 ln3 + 1/4 ln3 = ln3; user 1, 0 and 1/2 * 2 ln3 = ln3
    ln3 = math.log(3.0)
    margins = model.query_margins(weights, hand_batch())
    torch.testing.assert_close(margins, torch.tensor([ln3, 0.0, ln3]))
    # -log sigmoid(ln3) = ln(4/3), -log sigmoid(0) = ln2; each user's mean, then their mean
    user_losses = torch.tensor([math.log(4 / 3), (math.log(2) + math.log(4 / 3)) / 2])
    torch.testing.assert_close(losses[0], user_losses)
    torch.testing.assert_close(objective, user_losses.mean())
    # accuracy: user 0 ranks 1 of 1 pairs right, user 1 1 of 2 (a margin of 0 is not right)
    assert float(model.train_accuracy.compute()) == pytest.approx(0.75)


def test_both_sides_give_the_step_of_their_differences():
    # an MLP reads both sides: its base rewards are phi(chosen) - phi(rejected), one path
    torch.manual_seed(0)
    model = MetaRewardModel(embedding_dim=2, num_base_rewards=2, hidden_dim=3, inner_steps=2)
    chosen = torch.randn(6, 2)
    both = hand_batch()
    both.chosen, both.rejected = chosen, chosen - hand_batch().chosen
    support, query = model.base_pairs(both)
    phi = model.base_rewards
    want = phi(chosen) - phi(both.rejected)
    torch.testing.assert_close(torch.cat([support, query]), want)
    loss = model.training_step(both, 0)
    weights = adapt(
        model.w0, unpack_pairs(support, both.support_mask), None, both.support_mask, steps=2, lr=0.1
    )
    margins = pair_margins(weights, unpack_pairs(query, both.query_mask), None, "softmax")
    torch.testing.assert_close(loss, bradley_terry_loss(margins, both.query_mask).mean())


# ------------------------------------------------ the step against the reference
def reference_user_losses(model: MetaRewardModel, batch: dict) -> torch.Tensor:
    """The padded pure functions on both sides: base rewards of chosen and of rejected
    ``[B, P, K]``, batched adaptation, margins, per-user Bradley-Terry losses ``[B]``."""
    hp, phi = model.hparams, model.base_rewards
    weights = adapt(
        model.w0,
        phi(batch["support_chosen"]),
        phi(batch["support_rejected"]),
        batch["support_mask"],
        steps=hp.inner_steps,
        lr=hp.inner_lr,
        optimizer=hp.inner_optimizer,
        combination=hp.combination,
    )
    query = phi(batch["query_chosen"]), phi(batch["query_rejected"])
    margins = pair_margins(weights, *query, hp.combination)
    return bradley_terry_loss(margins, batch["query_mask"])


@pytest.mark.parametrize(
    "settings",
    [
        dict(combination="softmax", inner_optimizer="sgd"),
        dict(combination="softmax", inner_optimizer="adam"),
        dict(combination="linear", inner_optimizer="sgd"),
        dict(combination="linear", inner_optimizer="adam"),
        dict(combination="softmax", inner_optimizer="sgd", hidden_dim=4),  # both sides
    ],
)
def test_the_step_matches_the_padded_reference(settings):
    dm = make_datamodule()
    torch.manual_seed(0)
    model = MetaRewardModel(
        embedding_dim=6, num_base_rewards=3, inner_steps=2, inner_lr=0.5, **settings
    )
    assert model.reads_pair_differences == ("hidden_dim" not in settings)
    padded_loader = dm.meta_train_loader()
    packed_loader = dm.meta_train_loader(model.reads_pair_differences)
    user_losses = []  # the per-user losses, as a reducer (RPO's) receives them
    model.task_loss_reducer = lambda per_user: user_losses.append(per_user) or per_user.mean()
    for padded, packed in zip(padded_loader, packed_loader, strict=True):
        batches = [padded] + ([packed] if isinstance(packed, PairBatch) else [])
        losses, grads = [], []
        for batch in batches:  # a PairBatch, and a padded batch packed by the model
            user_losses.clear()
            loss = model.training_step(batch, 0)
            loss.backward()
            losses.append((loss.detach(), user_losses[0].detach()))
            grads.append([p.grad.clone() for p in model.parameters()])
            model.zero_grad(set_to_none=True)
        want = reference_user_losses(model, padded)
        want.mean().backward()
        for (loss, per_user), got in zip(losses, grads, strict=True):
            torch.testing.assert_close(per_user, want.detach(), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(loss, want.detach().mean(), rtol=1e-6, atol=1e-6)
            for g, p in zip(got, model.parameters(), strict=True):
                torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)
        model.zero_grad(set_to_none=True)


def test_evaluation_scores_each_group_as_the_padded_reference():
    dm = make_datamodule()
    torch.manual_seed(0)
    model = MetaRewardModel(embedding_dim=6, combination="linear", inner_steps=2, inner_lr=2.0)
    model.log = lambda *args, **kwargs: None  # no Trainer here
    reference = {group: UserAccuracy() for group in ("seen", "unseen", "all")}
    oracle = UserAccuracy()
    for batch in dm.test_dataloader():
        model.test_step(batch, 0)
        phi, mask = model.base_rewards, batch["query_mask"]
        support = phi(batch["support_chosen"]), phi(batch["support_rejected"])
        weights = adapt(
            model.w0,
            *support,
            batch["support_mask"],
            steps=2,
            lr=2.0,
            first_order=True,
            combination="linear",
        )
        query = phi(batch["query_chosen"]), phi(batch["query_rejected"])
        margins = pair_margins(weights, *query, "linear").detach()
        seen = batch["is_seen"]
        for group, rows in (("seen", seen), ("unseen", ~seen), ("all", seen | ~seen)):
            reference[group].update(margins[rows], mask[rows])
        oracle.update(batch["query_oracle_margin"], mask)
    for group, metric in reference.items():
        got = model.test_metrics[group]["user_acc"].per_user_values()
        assert torch.equal(got, metric.per_user_values()), group
    assert torch.equal(
        model.test_metrics["all"]["oracle_acc"].per_user_values(), oracle.per_user_values()
    )


def test_per_user_adaptation_takes_differences():
    torch.manual_seed(0)
    chosen, rejected = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    mask = torch.rand(3, 4) > 0.3
    w0 = torch.zeros(2, requires_grad=True)
    inner = dict(steps=2, lr=0.3, optimizer="adam")
    want = adapt(w0, chosen, rejected, mask, **inner)
    torch.testing.assert_close(adapt(w0, chosen - rejected, None, mask, **inner), want)
    torch.testing.assert_close(adapt_per_user(w0, chosen - rejected, None, mask, **inner), want)


# ------------------------------------------------------------- the data module
def test_the_data_module_gives_differences_only_to_models_that_read_them():
    dm = make_datamodule()
    assert "query_chosen" in next(iter(dm.train_dataloader()))  # no Trainer: chosen, rejected
    mlp = MetaRewardModel(embedding_dim=6, hidden_dim=4)
    assert not mlp.reads_pair_differences
    assert MetaRewardModel(embedding_dim=6).reads_pair_differences


@pytest.mark.parametrize("hidden_dim", [0, 4])
def test_a_fit_feeds_differences_to_linear_heads_and_logs_every_n_steps(tmp_path, hidden_dim):
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.loggers import CSVLogger

    kinds = set()

    class Kinds(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            kinds.add("packed differences" if isinstance(batch, PairBatch) else "padded")

    dm = make_datamodule()
    model = MetaRewardModel(embedding_dim=6, hidden_dim=hidden_dim, cosine_schedule=False)
    batches = len(dm.meta_train_loader())
    trainer = Trainer(
        max_epochs=3,
        log_every_n_steps=2,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path),
        callbacks=[Kinds()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    # linear heads read differences gathered packed; an MLP's padded batches are packed by it
    assert kinds == {"packed differences" if hidden_dim == 0 else "padded"}
    (metrics,) = tmp_path.rglob("metrics.csv")
    rows = metrics.read_text().splitlines()
    header = rows[0].split(",")
    logged = [dict(zip(header, row.split(","))) for row in rows[1:]]
    steps = [int(r["step"]) for r in logged if r.get("train/query_loss")]
    # as Lightning sends step values: after steps 2, 4, 6, ... (logged at step index 1, 3, 5)
    assert steps == list(range(1, 3 * batches, 2))
    assert sum(bool(r.get("train/user_acc")) for r in logged) == 3  # one per epoch
    assert "train/query_loss" in trainer.progress_bar_metrics


def test_the_input_scale_is_fitted_a_block_of_pairs_at_a_time():
    from mrm_lightning.method.warm_start import standardizing_scale
    from mrm_lightning.training.baselines import mean_square_difference, pair_differences

    data = make_datamodule().data
    want = standardizing_scale(pair_differences(data))
    for block in (7, 8192):
        assert mean_square_difference(data, block) ** -0.5 == pytest.approx(want, rel=1e-12)
