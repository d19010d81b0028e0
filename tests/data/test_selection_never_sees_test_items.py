"""Selection never reads a test item. Units (posts) are shared across users, so a validation
user's pairs in a test unit are comparisons of the very texts the test table scores: validation
users are scored on their validation-unit pairs only, and so is everything chosen on them (the
checkpoint and adaptation strength, the global model's and the warm start's L2, the mixture).

The source here is what makes the check able to fail: 60 posts x 3 responses judged by 40 users,
so most posts and texts are judged by several users (the synthetic population gives every pair
texts of its own, where any split keeps rows apart)."""

from __future__ import annotations

import torch

from mrm_lightning import EpisodicDataModule
from mrm_lightning.data.preferences import PreferenceData, PreferenceSource
from mrm_lightning.data.splits import TEST, TRAIN, VAL


class SharedPosts(PreferenceSource):
    """``posts`` x ``responses`` texts (one embedding row each); every user judges one pair of
    responses of each of ``per_user`` posts, by their own taste; the unit is the post."""

    def __init__(
        self,
        users: int = 40,
        posts: int = 60,
        responses: int = 3,
        per_user: int = 30,
        seed: int = 0,
    ) -> None:
        self.users, self.posts, self.responses, self.per_user = users, posts, responses, per_user
        self.seed, self.embedding_dim = seed, 6

    def load(self) -> PreferenceData:
        gen = torch.Generator().manual_seed(self.seed)
        table = torch.randn(self.posts * self.responses, self.embedding_dim, generator=gen)
        tastes = torch.randn(self.users, self.embedding_dim, generator=gen)
        user, chosen, rejected, unit = [], [], [], []
        for u in range(self.users):
            for post in torch.randperm(self.posts, generator=gen)[: self.per_user].tolist():
                a, b = (
                    post * self.responses + torch.randperm(self.responses, generator=gen)[:2]
                ).tolist()
                better = table[a] @ tastes[u] > table[b] @ tastes[u]
                user.append(u)
                chosen.append(a if better else b)
                rejected.append(b if better else a)
                unit.append(post)
        return PreferenceData(
            embeddings=table,
            user=torch.tensor(user),
            chosen=torch.tensor(chosen),
            rejected=torch.tensor(rejected),
            unit=torch.tensor(unit),
            user_ids=[f"u{u}" for u in range(self.users)],
        )


def rows_and_units(data: PreferenceData, pairs: torch.Tensor) -> tuple[set, set]:
    texts = set(torch.cat([data.chosen[pairs], data.rejected[pairs]]).tolist())
    return texts, set(data.unit[pairs].tolist())


def scored_test_pairs(dm: EpisodicDataModule) -> torch.Tensor:
    held_out = dm.held_out(TEST)
    return torch.cat([held_out[u] for u in dm.eval_users(TEST)])


def test_no_selection_pair_shares_a_unit_or_a_text_with_a_test_pair():
    dm = EpisodicDataModule(SharedPosts(), users_per_batch=4, support_size=5, validation_users=0.25)
    dm.setup("fit")
    data = dm.data
    judges = torch.unique(torch.stack([data.unit, data.user]), dim=1)[0]
    assert int(torch.bincount(judges).min()) >= 5  # every post is judged by several users
    selection = torch.cat([dm.held_out(VAL)[u] for u in dm.eval_users(VAL)])
    assert len(selection) >= 20 and len(dm.split.validation_users) == 5
    test_texts, test_units = rows_and_units(data, scored_test_pairs(dm))
    selection_texts, selection_units = rows_and_units(data, selection)
    assert selection_units.isdisjoint(test_units)
    assert selection_texts.isdisjoint(test_texts)
    # and the check can fail: validation users' test-unit pairs (what selection used to read)
    # are comparisons in the test table's units, of its texts
    everything = torch.cat(
        [
            torch.cat([dm.pairs_by_split[VAL][u], dm.pairs_by_split[TEST][u]])
            for u in dm.eval_users(VAL)
        ]
    )
    old_texts, old_units = rows_and_units(data, everything)
    assert old_units & test_units and old_texts & test_texts
    # what the baselines and the warm start choose their L2 on is the same set of pairs
    chosen_on = dm.validation_pairs()
    assert set(torch.cat([chosen_on.chosen, chosen_on.rejected]).tolist()) == selection_texts


def test_validating_on_every_users_validation_pairs_is_leak_free_too():
    dm = EpisodicDataModule(SharedPosts(), users_per_batch=4, support_size=5, validation_users=0.0)
    dm.setup("fit")
    selection = torch.cat([dm.held_out(VAL)[u] for u in dm.eval_users(VAL)])
    test_texts, test_units = rows_and_units(dm.data, scored_test_pairs(dm))
    selection_texts, selection_units = rows_and_units(dm.data, selection)
    assert selection_units.isdisjoint(test_units) and selection_texts.isdisjoint(test_texts)


def test_shared_rows_never_cross_sides_whatever_the_users():
    # the split keeps units, and so texts, on one side for everybody: with shared posts a
    # split that ignored units (or users' overlap) would put one text on two sides
    dm = EpisodicDataModule(SharedPosts(seed=1), users_per_batch=4, support_size=5)
    dm.setup("fit")
    data, side = dm.data, dm.split.pair_split
    rows = {
        part: set(torch.cat([data.chosen[side == part], data.rejected[side == part]]).tolist())
        for part in (TRAIN, VAL, TEST)
    }
    assert all(rows[part] for part in (TRAIN, VAL, TEST))
    assert rows[TRAIN].isdisjoint(rows[VAL] | rows[TEST]) and rows[VAL].isdisjoint(rows[TEST])
    # and the check can fail: the same pairs split at random, ignoring units, cross sides
    shuffled = side[torch.randperm(len(side), generator=torch.Generator().manual_seed(0))]
    random_train = set(
        torch.cat([data.chosen[shuffled == TRAIN], data.rejected[shuffled == TRAIN]]).tolist()
    )
    random_test = set(
        torch.cat([data.chosen[shuffled == TEST], data.rejected[shuffled == TEST]]).tolist()
    )
    assert not random_train.isdisjoint(random_test)
