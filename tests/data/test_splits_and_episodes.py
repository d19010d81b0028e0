"""Splits keep units whole and are seeded; episodes never overlap; processes see different users."""

import pytest
import torch

from mrm_lightning.data.episodes import EvalBatches, MetaTrainBatches
from mrm_lightning.data.gathering import collate_pairs
from mrm_lightning.data.preferences import PreferenceData
from mrm_lightning.data.sampling import hash_keys, resolve_size, sample_support_query
from mrm_lightning.data.splits import (
    TEST,
    TRAIN,
    UNUSED,
    VAL,
    assign_given_units,
    assign_units,
    cap_train_pairs,
    guard_text_leaks,
    split_pairs,
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


def test_assign_units_counts_by_hand():
    side = assign_units(10, 0.2, 0.3, torch.Generator().manual_seed(0))
    # round(0.3 * 10) = 3 test units, round(0.2 * 10) = 2 validation units, 5 training units
    assert [int((side == s).sum()) for s in (TRAIN, VAL, TEST)] == [5, 2, 3]
    again = assign_units(10, 0.2, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(side, again)


def test_given_units_test_wins_and_validation_comes_from_the_training_pool():
    #            unit: 0  0  1  2  2  3  4  5
    units = torch.tensor([0, 0, 1, 2, 2, 3, 4, 5])
    given = torch.tensor([TRAIN, TRAIN, TEST, TRAIN, TEST, TRAIN, UNUSED, TRAIN])
    side = assign_given_units(units, given, 6, 0.25, torch.Generator().manual_seed(0))
    assert side[1] == TEST and side[2] == TEST  # unit 2 has a test pair: test for everybody
    assert side[4] == UNUSED  # no labelled pair
    pool = side[[0, 3, 5]]
    assert int((pool == VAL).sum()) == 1 and int((pool == TRAIN).sum()) == 2  # round(0.25*3)


def test_cap_keeps_whole_units_and_skips_units_that_do_not_fit():
    units = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    for seed in range(10):
        keep = cap_train_pairs(units, 4, torch.Generator().manual_seed(seed))
        assert int(keep.sum()) <= 4
        for unit in units.unique():
            assert len(keep[units == unit].unique()) == 1  # whole units only
    # one unit of 3 and one of 1, or 2 + 1, or the unit of 4: never more than 4 pairs, and a
    # unit too big for what is left is skipped, not the end of the fill
    keeps = {
        tuple(cap_train_pairs(units, 4, torch.Generator().manual_seed(s)).tolist())
        for s in range(30)
    }
    assert all(sum(k) >= 3 for k in keeps)


def test_text_guard_drops_training_pairs_that_share_a_row_with_held_out_pairs():
    data = PreferenceData(
        embeddings=torch.randn(6, 2),
        user=torch.tensor([0, 1, 1, 0]),
        chosen=torch.tensor([0, 0, 2, 4]),
        rejected=torch.tensor([1, 3, 5, 2]),
        unit=torch.tensor([0, 1, 2, 3]),
        user_ids=["a", "b"],
    )
    split = torch.tensor([TEST, TRAIN, VAL, TRAIN])
    # pair 1 shares row 0 with the test pair; pair 3 shares row 2 with the validation pair
    assert guard_text_leaks(data, split) == 2
    assert split.tolist() == [TEST, UNUSED, VAL, UNUSED]


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


def test_support_never_takes_the_last_unit():
    units = torch.tensor([0, 0, 0, 1, 1, 1])  # 2 units of 3: asking for 5 support pairs
    for seed in range(10):
        support, query = sample_support_query(units, 5, None, torch.Generator().manual_seed(seed))
        assert len(support) == 3 and len(query) == 3  # the support shrinks, the query stays
    with pytest.raises(ValueError, match="at least 2 units"):
        sample_support_query(torch.zeros(5, dtype=torch.long), 2, None, torch.Generator())


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
            data, pairs, pairs, list(range(12)), seen, users_per_batch=2, rank=rank, world_size=3
        ):
            users += batch["user"].tolist()
            assert batch["is_seen"].tolist() == [u < 6 for u in batch["user"].tolist()]
    assert sorted(users) == list(range(12))


def test_a_process_with_no_evaluation_user_yields_one_empty_batch():
    data = shared_unit_data()
    pairs = train_pairs_of(data)
    batches = list(EvalBatches(data, pairs, pairs, [3], torch.arange(6), 4, rank=1, world_size=2))
    assert len(batches) == 1
    assert batches[0]["support_chosen"].shape == (0, 0, 4)
    assert batches[0]["user"].shape == (0,) and batches[0]["is_seen"].dtype == torch.bool


def test_support_sizes_drawn_from_a_range_cover_it_and_are_seeded():
    data = shared_unit_data(pairs_per_user=30, units_per_user=30)  # one pair per unit

    def sizes(seed):
        tasks = MetaTrainBatches(
            data, train_pairs_of(data), torch.arange(12), 3, 8, None, seed, support_size_min=1
        )
        return [int(b["support_mask"][u].sum()) for b in tasks for u in range(3)]

    drawn = sizes(0)
    assert min(drawn) >= 1 and max(drawn) <= 8 and len(set(drawn)) > 3
    assert drawn == sizes(0) and drawn != sizes(1)


def test_a_users_episode_is_the_same_in_any_meta_batch():
    data = shared_unit_data()  # units of 3 pairs
    tasks = MetaTrainBatches(data, train_pairs_of(data), torch.arange(12), 3, 6, None, seed=0)
    users = [5, 2, 9]
    support, support_mask, query, query_mask = tasks.episodes(torch.tensor(users), epoch=1)
    assert support_mask.sum(1).tolist() == [6, 6, 6]  # two whole units reach 6 pairs
    assert query_mask.sum(1).tolist() == [24, 24, 24]
    for i, user in enumerate(users):
        alone = tasks.episode(user, 1)
        assert torch.equal(support[i][support_mask[i]], alone[0])
        assert torch.equal(query[i][query_mask[i]], alone[1])
        assert (data.user[alone[0]] == user).all() and (data.user[alone[1]] == user).all()
        assert set(data.unit[alone[0]].tolist()).isdisjoint(data.unit[alone[1]].tolist())
    assert not torch.equal(tasks.episode(5, 2)[0], tasks.episode(5, 1)[0])


def test_an_epochs_batches_are_split_at_once_with_each_batchs_own_padding():
    data = shared_unit_data(pairs_per_user=30, units_per_user=30)
    tasks = MetaTrainBatches(
        data, train_pairs_of(data), torch.arange(12), 3, 8, 5, seed=0, support_size_min=1
    )
    users = torch.tensor([5, 2, 9, 0, 11, 7, 3])  # batches of 3, 3 and 1 users
    by_batch = list(tasks.episodes_by_batch(users, 1, 3))
    assert len(by_batch) == 3
    for got, alone in zip(by_batch, users.split(3), strict=True):
        want = tasks.episodes(alone, 1)  # padded to this batch's widest user, not the epoch's
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    # and the iterator yields exactly these episodes, batch by batch
    for batch in tasks:
        support, support_mask, *_ = tasks.episodes(batch["user"], 0)
        assert torch.equal(batch["support_mask"], support_mask)
        assert torch.equal(
            batch["support_chosen"][support_mask],
            data.embeddings[data.chosen[support[support_mask]]],
        )


def test_episode_keys_are_pinned():
    # every episode (so every documented result) depends on these numbers: a change to the
    # hash is a change to the sampling, on purpose or not
    assert hash_keys(0, 0, torch.tensor([1, 2, 3]), 1).tolist() == [
        52431074,
        1799612214,
        1317260958,
    ]
    assert int(hash_keys(7)) == 148231923 and int(hash_keys(2**40 + 5, 3)) == 2117312069
