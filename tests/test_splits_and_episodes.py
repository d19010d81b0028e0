"""Splits keep units whole and are seeded; episodes never overlap; processes see different users."""

import pytest
import torch

from mrm_lightning.episodes import (
    EvalBatches,
    MetaTrainBatches,
    collate_pairs,
    resolve_size,
    sample_support_query,
)
from mrm_lightning.preferences import PreferenceData
from mrm_lightning.splits import (
    TEST,
    TRAIN,
    UNUSED,
    VAL,
    split_pairs,
    split_user_units,
    split_users,
)


def shared_unit_data(num_users=12, pairs_per_user=30, units_per_user=10, seed=0):
    """Users whose pairs share units (three pairs per post), like real datasets."""
    gen = torch.Generator().manual_seed(seed)
    user = torch.arange(num_users).repeat_interleave(pairs_per_user)
    local_unit = torch.arange(pairs_per_user) % units_per_user
    unit = user * units_per_user + local_unit.repeat(num_users)
    rows = torch.arange(2 * len(user))
    return PreferenceData(
        embeddings=torch.randn(len(rows), 4, generator=gen),
        user=user,
        chosen=rows[0::2],
        rejected=rows[1::2],
        unit=unit,
        user_ids=[f"u{i}" for i in range(num_users)],
    ).validate()


def test_split_users_is_seeded_and_disjoint():
    seen, unseen = split_users(10, 0.3, torch.Generator().manual_seed(1))
    assert len(unseen) == 3 and len(seen) == 7
    assert set(seen.tolist()).isdisjoint(unseen.tolist())
    again = split_users(10, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(seen, again[0])


def test_split_user_units_keeps_units_whole_and_honours_the_cap():
    units = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 5, 6, 7, 8, 9])
    split = split_user_units(
        units, 0.2, 0.2, max_train_pairs=4, gen=torch.Generator().manual_seed(0)
    )
    for unit in units.unique():
        assert len(split[units == unit].unique()) == 1  # a unit never straddles two splits
    assert (split == TEST).any() and (split == TRAIN).any()
    assert int((split == TRAIN).sum()) <= 4


def test_split_pairs_no_leakage_caps_and_min_pairs():
    data = shared_unit_data()
    moved = (data.user == 11).nonzero().flatten()[:20]
    data.user[moved] = 10  # user 11 keeps 10 pairs, under the minimum of 20
    kwargs = dict(
        unseen_fraction=0.5,
        val_fraction=0.2,
        test_fraction=0.3,
        max_train_pairs_seen=None,
        max_train_pairs_unseen=6,
        min_pairs_per_user=20,
        seed=3,
    )
    summary = split_pairs(data, **kwargs)
    assert summary.dropped_users.tolist() == [11]
    assert int((data.user == 11).sum()) == 10
    for part_a in (TRAIN, VAL, TEST):
        for part_b in (TRAIN, VAL, TEST):
            if part_a < part_b:
                a = set(data.unit[summary.pair_split == part_a].tolist())
                assert a.isdisjoint(data.unit[summary.pair_split == part_b].tolist())
    for user in summary.unseen_users.tolist():
        assert int(((data.user == user) & (summary.pair_split == TRAIN)).sum()) <= 6
    assert torch.equal(summary.pair_split, split_pairs(data, **kwargs).pair_split)  # seeded
    assert not torch.equal(
        summary.pair_split, split_pairs(data, **{**kwargs, "seed": 4}).pair_split
    )
    assert (summary.pair_split[data.user == 11] == UNUSED).all()


def test_resolve_size_counts_and_fractions():
    assert resolve_size(5, 40) == 5
    assert resolve_size(0.25, 40) == 10
    assert resolve_size(0.01, 40) == 1
    with pytest.raises(ValueError):
        resolve_size(1.5, 40)


def test_support_and_query_never_share_a_unit_and_are_seeded():
    units = torch.arange(30) // 3  # 10 units of 3 pairs
    for seed in range(20):
        support, query = sample_support_query(units, 7, None, torch.Generator().manual_seed(seed))
        assert set(units[support].tolist()).isdisjoint(units[query].tolist())
        assert len(support) >= 7 and len(support) + len(query) == 30
    a = sample_support_query(units, 0.3, 5, torch.Generator().manual_seed(1))
    b = sample_support_query(units, 0.3, 5, torch.Generator().manual_seed(1))
    c = sample_support_query(units, 0.3, 5, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert len(a[1]) == 5


def test_support_size_must_leave_a_query():
    with pytest.raises(ValueError, match="support_size"):
        sample_support_query(torch.arange(5), 5, None, torch.Generator())


def test_collate_pads_and_masks_users_of_different_sizes():
    data = shared_unit_data()
    batch = collate_pairs(data, [torch.tensor([0, 1, 2]), torch.tensor([5])], "query")
    assert batch["query_chosen"].shape == (2, 3, 4)
    assert batch["query_mask"].tolist() == [[True, True, True], [True, False, False]]
    torch.testing.assert_close(batch["query_rejected"][1, 0], data.embeddings[data.rejected[5]])


def train_pairs_of(data):
    return {u: (data.user == u).nonzero().flatten() for u in range(data.num_users)}


def meta_batches(rank, world, epoch=0, seed=0):
    data = shared_unit_data()
    tasks = MetaTrainBatches(
        data,
        train_pairs_of(data),
        torch.arange(12),
        users_per_batch=3,
        support_size=6,
        query_size=None,
        seed=seed,
        epoch=lambda: epoch,
        rank=rank,
        world_size=world,
    )
    return list(tasks)


def test_meta_batches_give_each_process_different_users_and_are_seeded():
    rank0, rank1 = meta_batches(0, 2), meta_batches(1, 2)
    assert len(rank0) == len(rank1) == 2
    for a, b in zip(rank0, rank1):
        assert set(a["user"].tolist()).isdisjoint(b["user"].tolist())
    again = meta_batches(0, 2)
    assert all(torch.equal(x["support_chosen"], y["support_chosen"]) for x, y in zip(rank0, again))
    next_epoch = meta_batches(0, 2, epoch=1)
    assert not all(torch.equal(x["user"], y["user"]) for x, y in zip(rank0, next_epoch))


def test_meta_batch_support_and_query_are_disjoint_rows():
    batch = meta_batches(0, 1)[0]
    for user in range(3):
        support = batch["support_chosen"][user][batch["support_mask"][user]]
        query = batch["query_chosen"][user][batch["query_mask"][user]]
        assert not (support[:, None, :] == query[None, :, :]).all(-1).any()


def test_eval_batches_cover_every_user_once_across_processes():
    data = shared_unit_data()
    pairs = train_pairs_of(data)
    seen = torch.arange(6)
    users = []
    for rank in range(3):
        for batch in EvalBatches(
            data, pairs, pairs, seen, users_per_batch=2, rank=rank, world_size=3
        ):
            users += batch["user"].tolist()
            assert batch["is_seen"].tolist() == [u < 6 for u in batch["user"].tolist()]
    assert sorted(users) == list(range(12))
