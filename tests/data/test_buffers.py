"""Reused batch memory: lent again only when nothing refers to it, so batches never change."""

import pytest
import torch

from mrm_lightning.data import buffers as buffers_module
from mrm_lightning.data.buffers import ReusableBuffers
from mrm_lightning.data.episodes import MetaTrainBatches
from tests.data.test_splits_and_episodes import shared_unit_data, train_pairs_of

needs_counts = pytest.mark.skipif(
    buffers_module._storage_users is None, reason="this torch does not expose storage counts"
)


@needs_counts
def test_memory_is_lent_again_only_once_nothing_refers_to_it():
    pool = ReusableBuffers()
    first = pool.take((2, 3), torch.float32)
    address, others = first.data_ptr(), []  # others: held to the end, never lent again
    others.append(pool.take((2, 3), torch.float32))
    assert others[-1].data_ptr() != address  # first is still held
    view = first.view(-1)
    del first
    others.append(pool.take((2, 3), torch.float32))
    assert others[-1].data_ptr() != address  # a view still holds it
    x = torch.ones(6, requires_grad=True)
    loss = (x * view).sum()  # autograd keeps the memory for backward
    del view
    others.append(pool.take((6,), torch.float32))
    assert others[-1].data_ptr() != address
    del loss
    again = pool.take((3, 2), torch.float32)  # free now: the same memory, any shape that fits
    assert again.data_ptr() == address and again.shape == (3, 2)
    assert pool.take((2, 3), torch.float16).dtype == torch.float16  # never across dtypes


@needs_counts
def test_pool_keeps_at_most_its_limit_and_prefers_the_smallest_free_buffer():
    pool = ReusableBuffers(most=2, slack=0.0)
    held = [pool.take((n,), torch.float32) for n in (10, 20, 30)]
    assert len(pool.buffers) == 2
    small = pool.take((5,), torch.float32)
    assert small.data_ptr() not in {h.data_ptr() for h in held}  # all held: a new buffer
    del held
    large = pool.take((25,), torch.float32)
    assert large.untyped_storage().nbytes() == 30 * 4


def test_meta_batches_are_the_same_with_reused_memory_whether_kept_or_dropped():
    data = shared_unit_data()

    def tasks(reuse: bool) -> MetaTrainBatches:
        made = MetaTrainBatches(data, train_pairs_of(data), torch.arange(12), 3, 6, None, 0)
        if not reuse:
            made.buffers = None
        return made

    fresh = list(tasks(reuse=False))
    kept = list(tasks(reuse=True))  # every batch held at once
    dropped = [{k: v.clone() for k, v in b.items()} for b in tasks(reuse=True)]
    for want, got_kept, got_dropped in zip(fresh, kept, dropped, strict=True):
        for key in want:
            assert torch.equal(want[key], got_kept[key]), key
            assert torch.equal(want[key], got_dropped[key]), key
