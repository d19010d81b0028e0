"""Property tests: any unit structure and any episode size either gives an episode or, set-up
time, a named error; never a crash in the middle of training."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrm_lightning import EpisodicDataModule
from mrm_lightning.data.preferences import PreferenceData, PreferenceSource
from mrm_lightning.data.sampling import can_make_episode, sample_support_query

unit_sizes = st.lists(st.integers(1, 12), min_size=1, max_size=15)
sizes = st.one_of(st.integers(0, 60), st.floats(0.01, 0.99))


@given(unit_sizes, sizes, st.one_of(st.none(), st.integers(1, 40)), st.integers(0, 2**31))
def test_support_query_by_unit_for_any_structure(sizes_of_units, support_size, query_size, seed):
    units = torch.repeat_interleave(torch.arange(len(sizes_of_units)), torch.tensor(sizes_of_units))
    units = units[torch.randperm(len(units), generator=torch.Generator().manual_seed(seed))]
    if not can_make_episode(units):
        return  # one unit: the data module leaves such users out of meta-training (tested below)
    support, query = sample_support_query(
        units, support_size, query_size, torch.Generator().manual_seed(seed)
    )
    assert len(query) >= 1
    assert set(units[support].tolist()).isdisjoint(units[query].tolist())
    assert len(set(support.tolist()) | set(query.tolist())) == len(support) + len(query)
    if query_size is not None:
        assert len(query) <= query_size


class RandomUnits(PreferenceSource):
    """Users whose pairs come in units of random sizes (posts judged many times, or once)."""

    embedding_dim = 3

    def __init__(self, per_user_unit_sizes: list[list[int]], seed: int) -> None:
        self.per_user, self.seed = per_user_unit_sizes, seed

    def load(self) -> PreferenceData:
        user, unit, next_unit = [], [], 0
        for index, sizes_of_units in enumerate(self.per_user):
            for size in sizes_of_units:
                user += [index] * size
                unit += [next_unit] * size
                next_unit += 1
        pairs = len(user)
        gen = torch.Generator().manual_seed(self.seed)
        return PreferenceData(
            embeddings=torch.randn(2 * pairs, 3, generator=gen),
            user=torch.tensor(user),
            chosen=torch.arange(0, 2 * pairs, 2),
            rejected=torch.arange(1, 2 * pairs, 2),
            unit=torch.tensor(unit),
            user_ids=[f"u{i}" for i in range(len(self.per_user))],
        )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(unit_sizes, min_size=2, max_size=10),
    sizes,
    st.integers(1, 3),
    st.integers(0, 1000),
)
def test_data_module_either_refuses_at_set_up_or_serves_every_epoch(
    per_user, support_size, users_per_batch, seed
):
    dm = EpisodicDataModule(
        RandomUnits(per_user, seed),
        users_per_batch=users_per_batch,
        support_size=support_size,
        min_pairs_per_user=1,
        eval_users_per_batch=2,
        seed=seed,
    )
    try:
        dm.setup("fit")
        loader = dm.train_dataloader()
    except ValueError as error:  # named settings, at set up or before any training step
        assert "data." in str(error)
        return
    for epoch in range(3):
        loader.dataset.epoch = lambda epoch=epoch: epoch
        for batch in loader:
            assert batch["query_mask"].any(-1).all()  # every user has a query pair
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        assert len(list(loader)) >= 1
