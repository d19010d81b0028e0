"""The data module: leakage-free splits, the few-shot cap, and start-up errors naming settings."""

import pytest
import torch

from mrm_lightning import EpisodicDataModule, SyntheticPopulation
from mrm_lightning.data.splits import TEST, TRAIN, VAL


def small_population(**kw):
    return SyntheticPopulation(
        num_users=20, embedding_dim=6, num_directions=2, min_pairs=20, max_pairs=40, **kw
    )


def test_every_user_is_split_without_leakage_and_unseen_users_are_capped():
    dm = EpisodicDataModule(
        small_population(), users_per_batch=2, support_size=4, max_train_pairs_unseen=7, seed=1
    )
    dm.setup("fit")
    assert len(dm.split.seen_users) == len(dm.split.unseen_users) == 10
    for user in range(20):
        units = [set(dm.data.unit[dm.pairs_by_split[p][user]].tolist()) for p in (TRAIN, VAL, TEST)]
        assert units[0].isdisjoint(units[1]) and units[0].isdisjoint(units[2])
        assert units[1].isdisjoint(units[2])
        assert len(dm.pairs_by_split[TEST][user]) > 0
    for user in dm.split.unseen_users.tolist():
        assert 0 < len(dm.pairs_by_split[TRAIN][user]) <= 7


def test_support_size_larger_than_training_pairs_fails_at_setup():
    dm = EpisodicDataModule(small_population(), support_size=500)
    dm.setup("fit")
    with pytest.raises(ValueError, match="support_size=500"):
        dm.train_dataloader()


def test_meta_batch_larger_than_the_seen_users_fails_clearly():
    dm = EpisodicDataModule(small_population(), users_per_batch=50, support_size=4)
    dm.setup("fit")
    with pytest.raises(ValueError, match="users_per_batch=50"):
        dm.train_dataloader()


def test_same_seed_same_tasks():
    def first_batch(seed):
        dm = EpisodicDataModule(small_population(), users_per_batch=3, support_size=4, seed=seed)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["support_chosen"], c["support_chosen"])


@pytest.mark.parametrize(
    "bad", [dict(val_fraction=0.5, test_fraction=0.5), dict(test_fraction=0.0)]
)
def test_bad_fractions_are_rejected(bad):
    with pytest.raises(ValueError, match="fraction"):
        EpisodicDataModule(small_population(), **bad)


def test_nan_embeddings_stop_the_run_with_the_row():
    data = small_population().load()
    data.embeddings[7, 2] = float("nan")
    with pytest.raises(ValueError, match="row 7"):
        data.validate()


class CappedAway(SyntheticPopulation):
    """Synthetic users whose pairs come in units of 6: a cap of 4 leaves unseen users none."""

    def load(self):
        data = super().load()
        start = torch.searchsorted(data.user, data.user)  # users' pairs are contiguous
        data.unit = data.user * 1000 + (torch.arange(data.num_pairs) - start) // 6
        return data


@pytest.mark.parametrize("handling", ["exclude", "prior"])
def test_users_without_training_pairs_are_handled_the_same_in_every_row(handling):
    dm = EpisodicDataModule(
        CappedAway(num_users=20, embedding_dim=6, num_directions=2, min_pairs=36, max_pairs=36),
        users_per_batch=2,
        support_size=4,
        max_train_pairs_unseen=4,  # every unit holds 6 pairs: unseen users keep none
        users_without_train_pairs=handling,
        seed=0,
    )
    dm.setup("fit")
    unseen = dm.split.unseen_users.tolist()
    assert all(len(dm.pairs_by_split[TRAIN][u]) == 0 for u in unseen)
    assert dm.users_without_training(TEST) == len(unseen) > 0
    tested = dm.eval_users(TEST)
    assert set(unseen) <= set(tested) if handling == "prior" else set(unseen).isdisjoint(tested)
    # the evaluation batches hold exactly those users, and they are the report's users too
    batches = list(dm.test_dataloader())
    assert sorted(u for b in batches for u in b["user"].tolist()) == tested
    from mrm_lightning.training.report import evaluated_groups

    assert evaluated_groups(dm)["overall"] == tested
    if handling == "prior":  # scored with no support pair: the prior
        empty = [b for b in batches if (b["support_mask"].sum(-1) == 0).any()]
        assert empty
