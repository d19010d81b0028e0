"""Compact embedding storage: float16 / bfloat16 tables hold the same numbers rounded, give the
same episodes, and losses that match float32's to the rounding."""

import pytest
import torch

from mrm_lightning import EpisodicDataModule, MetaRewardModel, SyntheticPopulation
from mrm_lightning.data.preferences import (
    CompactEmbeddings,
    PreferenceSource,
    store_as,
    table_bytes,
)
from mrm_lightning.data.sources import synthetic


def population(**kw):
    return SyntheticPopulation(
        num_users=30, embedding_dim=5, num_directions=2, min_pairs=20, max_pairs=40, **kw
    )


def test_generation_in_blocks_draws_the_numbers_of_one_draw(monkeypatch):
    # 5-d rows: blocks of 8 pairs hold 80 values (a multiple of torch's 16); the tail joins
    # the block before it when it has under 16 values
    whole = population().load()
    monkeypatch.setattr(synthetic, "NOISE_BLOCK", 8)
    assert synthetic.noise_blocks(17, 16)[-1] == (16, 17)
    assert synthetic.noise_blocks(17, 10)[-1] == (8, 17)
    blocks = population().load()
    assert torch.equal(whole.embeddings, blocks.embeddings)
    assert torch.equal(whole.oracle_margin, blocks.oracle_margin)
    assert torch.equal(whole.chosen, blocks.chosen)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_compact_population_is_the_float32_table_rounded(dtype):
    full, compact = population().load(), population().load_as(dtype)
    assert isinstance(compact.embeddings, CompactEmbeddings)
    assert torch.equal(compact.embeddings.table, full.embeddings.to(getattr(torch, dtype)))
    assert table_bytes(compact.embeddings) * 2 == table_bytes(full.embeddings)
    index = torch.tensor([[3, 0], [7, 7]])
    rows = compact.embeddings[index]  # gathered rows come back as float32
    assert rows.dtype == torch.float32 and rows.shape == (2, 2, 5)
    assert torch.equal(rows, compact.embeddings.table.float()[index])
    torch.testing.assert_close(rows, full.embeddings[index], atol=0.0, rtol=2**-7)
    for field in ("user", "chosen", "rejected", "unit", "oracle_margin"):
        assert torch.equal(getattr(compact, field), getattr(full, field))


def test_any_source_can_be_stored_compactly_block_by_block():
    class Plain(PreferenceSource):  # only load(): the base class converts its table
        embedding_dim = 5

        def load(self):
            return population().load()

    full = Plain().load()
    compact = Plain().load_as("float16")
    assert torch.equal(compact.embeddings.table, full.embeddings.half())
    assert store_as(full, "float32") is full
    blocks = store_as(full, "float16", block_values=35)  # 7 rows at a time
    assert torch.equal(blocks.embeddings.table, compact.embeddings.table)


def first_batch_and_loss(dtype):
    dm = EpisodicDataModule(
        population(), users_per_batch=4, support_size=5, embedding_dtype=dtype, seed=1
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    model = MetaRewardModel(embedding_dim=5, num_base_rewards=3, inner_steps=2, inner_lr=0.5)
    return batch, model.training_step(batch, 0)


def test_float16_storage_gives_the_same_episodes_and_nearly_the_same_loss():
    full, full_loss = first_batch_and_loss("float32")
    half, half_loss = first_batch_and_loss("float16")
    assert full.keys() == half.keys()
    for key in ("user", "support_mask", "query_mask", "query_oracle_margin"):
        assert torch.equal(full[key], half[key]), key
    for key in ("support_chosen", "query_rejected"):
        assert half[key].dtype == torch.float32
        assert torch.equal(half[key], full[key].half().float())
    assert half_loss != full_loss  # the rounding is there, and small
    torch.testing.assert_close(half_loss, full_loss, atol=1e-3, rtol=1e-3)


def test_unknown_storage_dtype_names_the_setting():
    with pytest.raises(ValueError, match="data.embedding_dtype"):
        EpisodicDataModule(population(), embedding_dtype="int8")
