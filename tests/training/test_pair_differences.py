"""Meta-batches of pair differences (chosen minus rejected) give the same margins, losses and
meta-gradients as chosen and rejected embeddings, for linear base functions."""

import pytest
import torch

from mrm_lightning import EpisodicDataModule, MetaRewardModel, SyntheticPopulation
from mrm_lightning.data.buffers import ReusableBuffers
from mrm_lightning.data.gathering import (
    gather_differences,
    gather_episode_differences,
    gather_pairs,
    split_packed,
    unpack_pairs,
)
from mrm_lightning.method.maml import adapt, adapt_per_user, pair_margins


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


def test_an_episode_gathers_support_then_query_differences_in_one_pass():
    data = make_datamodule().data
    support, support_mask = torch.tensor([[3, 1], [2, 0]]), torch.tensor([[1, 1], [1, 0]]).bool()
    query, query_mask = torch.tensor([[5, 0], [6, 7]]), torch.tensor([[1, 0], [1, 1]]).bool()
    got = gather_episode_differences(data, (support, support_mask, query, query_mask))
    # one tensor, support pairs then query pairs: a GPU batch moves it in one copy
    packed = {"pair_difference", "support_mask", "query_mask", "query_owner"}
    assert got.keys() == packed | {"support_oracle_margin", "query_oracle_margin"}
    assert torch.equal(got["query_owner"], torch.tensor([0, 1, 1]))  # each query pair's user
    parts = split_packed(got["pair_difference"], got)
    for part, prefix, pairs, mask in zip(
        parts, ("support", "query"), (support, query), (support_mask, query_mask), strict=True
    ):
        want = gather_pairs(data, pairs, mask, prefix, differences=True)
        assert torch.equal(part, want[f"{prefix}_difference"])
        for key in ("mask", "oracle_margin"):
            assert torch.equal(got[f"{prefix}_{key}"], want[f"{prefix}_{key}"])


def test_split_packed_reads_the_sizes_from_shapes():
    batch = {"query_owner": torch.tensor([0, 0, 1])}
    values = torch.arange(10.0).view(5, 2)
    support, query = split_packed(values, batch)
    assert torch.equal(support, values[:2]) and torch.equal(query, values[2:])
    support, query = split_packed(values, {"query_owner": torch.zeros(0, dtype=torch.long)})
    assert torch.equal(support, values) and query.shape == (0, 2)


@pytest.mark.parametrize("combination", ["softmax", "linear"])
@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_difference_batches_match_pair_batches(combination, inner_optimizer):
    dm = make_datamodule()
    torch.manual_seed(0)
    model = MetaRewardModel(
        embedding_dim=6,
        num_base_rewards=3,
        inner_steps=2,
        inner_lr=0.5,
        combination=combination,
        inner_optimizer=inner_optimizer,
    )
    assert model.reads_pair_differences
    pairs_loader, differences_loader = dm.meta_train_loader(), dm.meta_train_loader(True)
    user_losses = []  # the per-user losses, as a reducer (RPO's) receives them
    model.task_loss_reducer = lambda per_user: user_losses.append(per_user) or per_user.mean()
    for pairs, differences in zip(pairs_loader, differences_loader, strict=True):
        assert "pair_difference" in differences and "query_chosen" not in differences
        assert torch.equal(pairs["query_mask"], differences["query_mask"])
        # the real pairs only, packed
        real_pairs = int(pairs["support_mask"].sum() + pairs["query_mask"].sum())
        assert len(differences["pair_difference"]) == real_pairs
        losses, grads, margins = [], [], []
        user_losses.clear()
        for batch in (pairs, differences):
            weights = model.adapt_users(batch)
            margins.append(model.query_margins(weights, batch))
            loss = model.training_step(batch, 0)
            loss.backward()
            losses.append(loss.detach())
            grads.append([p.grad.clone() for p in model.parameters()])
            model.zero_grad(set_to_none=True)
        real = pairs["query_mask"]  # padding pairs' margins are masked out, whatever they are
        torch.testing.assert_close(margins[1][real], margins[0][real], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(user_losses[1], user_losses[0], rtol=1e-6, atol=1e-6)
        accuracy = model.train_accuracy  # each step counted every user's correct pairs
        assert torch.equal(accuracy.correct[-1], accuracy.correct[-2])
        assert torch.equal(accuracy.pairs[-1], accuracy.pairs[-2])
        for got, want in zip(grads[1], grads[0], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_per_user_adaptation_takes_differences():
    torch.manual_seed(0)
    chosen, rejected = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    mask = torch.rand(3, 4) > 0.3
    w0 = torch.zeros(2, requires_grad=True)
    inner = dict(steps=2, lr=0.3, optimizer="adam")
    want = adapt(w0, chosen, rejected, mask, **inner)
    torch.testing.assert_close(adapt(w0, chosen - rejected, None, mask, **inner), want)
    torch.testing.assert_close(adapt_per_user(w0, chosen - rejected, None, mask, **inner), want)


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

    keys = set()

    class Keys(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            keys.update(batch)

    dm = make_datamodule()
    model = MetaRewardModel(embedding_dim=6, hidden_dim=hidden_dim, cosine_schedule=False)
    batches = len(dm.meta_train_loader())
    trainer = Trainer(
        max_epochs=3,
        log_every_n_steps=2,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path),
        callbacks=[Keys()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert ("pair_difference" in keys) == (hidden_dim == 0)
    assert ("query_chosen" in keys) == (hidden_dim > 0)
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
