"""One global model per run: the report's global row and MRM's warm start (the fallback that
validation may keep) are the same fit, and the table says when MRM's w0 row shows it."""

from __future__ import annotations

import torch

from mrm_lightning import EpisodicDataModule, MetaRewardModel, SyntheticPopulation
from mrm_lightning.data.splits import TRAIN
from mrm_lightning.training.baselines import global_reward_model, sample_pairs
from mrm_lightning.training.report import W0_ROW, format_table


def test_the_reports_global_model_is_the_warm_start():
    population = SyntheticPopulation(num_users=60, embedding_dim=6, min_pairs=20, max_pairs=30)
    dm = EpisodicDataModule(population, users_per_batch=4, support_size=5, validation_users=0.2)
    dm.setup("fit")
    # a sample smaller than the seen users' pairs, so both must draw the same one
    model = MetaRewardModel(embedding_dim=6, num_base_rewards=3, fit_sample_pairs=300)
    model.fit_to_data(dm)
    direction, _ = global_reward_model(dm, model.hparams.fit_sample_pairs)
    # the warm start's prior mixes its rows equally, on inputs times the fitted scale
    warm = model.base_rewards.scale * model.warm_weight.mean(0)
    torch.testing.assert_close(warm, direction, rtol=1e-4, atol=1e-5)
    # fitted on every seen user's training pairs (not only the meta-training users')
    seen_pairs = dm.pairs(TRAIN, dm.split.seen_users)
    assert seen_pairs.num_pairs > 300 and sample_pairs(seen_pairs, 300).num_pairs == 300


def test_sample_pairs_is_seeded_and_keeps_small_sets_whole():
    population = SyntheticPopulation(num_users=10, embedding_dim=3, min_pairs=10, max_pairs=12)
    data = population.load()
    assert sample_pairs(data, None) is data and sample_pairs(data, data.num_pairs) is data
    first, again = sample_pairs(data, 20), sample_pairs(data, 20)
    assert first.num_pairs == 20 and torch.equal(first.chosen, again.chosen)


def test_the_table_names_the_w0_row_for_what_it_shows():
    rows = {"MRM (adapted)": {"seen": 0.6}, W0_ROW: {"seen": 0.6}}
    assert "MRM w0, no adaptation" in format_table(rows)
    shown = format_table(rows, {W0_ROW: "MRM w0 = the warm start (global)"})
    assert "MRM w0 = the warm start (global)" in shown and "no adaptation" not in shown
