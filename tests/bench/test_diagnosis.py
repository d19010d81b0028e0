"""``mrm diagnose`` on constructed data with a known answer: users who share one reward, two
opposed groups, and the same with user ids shuffled; items not shared (the model test) and
shared (the items test, per-group ceilings)."""

from __future__ import annotations

import json

import pytest
import torch

from mrm_lightning.bench.diagnosis import DiagnoseSettings, diagnose
from mrm_lightning.bench.diagnosis_data import training_pairs
from mrm_lightning.bench.disagreement import TestSettings
from mrm_lightning.cli.main import main
from mrm_lightning.data.datamodule import EpisodicDataModule
from mrm_lightning.data.preferences import PreferenceData, PreferenceSource
from mrm_lightning.data.sources.synthetic import SyntheticPopulation
from mrm_lightning.data.splits import TRAIN, UNUSED
from tests.conftest import REPO

FAST = TestSettings(permutations=200, ranks=(4,), l2_grid=(0.3,))


class Given(PreferenceSource):
    """A source that returns data built in the test."""

    def __init__(self, data: PreferenceData) -> None:
        self.data, self.embedding_dim = data, data.embedding_dim

    def load(self) -> PreferenceData:
        return self.data


def set_up(source: PreferenceSource) -> EpisodicDataModule:
    datamodule = EpisodicDataModule(source, max_train_pairs_unseen=8, min_pairs_per_user=5)
    datamodule.setup()
    return datamodule


def population(clusters: int) -> EpisodicDataModule:
    """Items not shared; one taste for everybody (1 cluster) or two opposed groups (2)."""
    return set_up(
        SyntheticPopulation(
            num_users=40, embedding_dim=6, num_directions=2, num_clusters=clusters,
            shared_strength=0.0, cluster_spread=0.0, hard_user_fraction=0.0, sharpness=3.0,
            min_pairs=50, max_pairs=60, seed=1,
        )
    )  # fmt: skip


def shared_items(opposed: bool, users: int = 30, seed: int = 0) -> EpisodicDataModule:
    """40 units of 4 items; each user judges every pair of 20 random units (120 pairs). The
    first half of the users likes direction w, the second half w too or, opposed, -w."""
    gen = torch.Generator().manual_seed(seed)
    units, per_unit, dim = 40, 4, 6
    embeddings = torch.randn(units * per_unit, dim, generator=gen)
    w = torch.nn.functional.normalize(torch.randn(dim, generator=gen), dim=0) * 3
    rows = {"user": [], "first": [], "second": [], "unit": []}
    for user in range(users):
        taste = -w if opposed and user >= users // 2 else w
        for unit in torch.randperm(units, generator=gen)[:20].tolist():
            for i in range(per_unit):
                for j in range(i + 1, per_unit):
                    a, b = unit * per_unit + i, unit * per_unit + j
                    margin = (embeddings[a] - embeddings[b]) @ taste
                    a_wins = bool(torch.rand(1, generator=gen) < torch.sigmoid(margin))
                    rows["user"].append(user)
                    rows["first"].append(a if a_wins else b)
                    rows["second"].append(b if a_wins else a)
                    rows["unit"].append(unit)
    data = PreferenceData(
        embeddings, torch.tensor(rows["user"]), torch.tensor(rows["first"]),
        torch.tensor(rows["second"]), torch.tensor(rows["unit"]),
        [f"user{u}" for u in range(users)],
    )  # fmt: skip
    return set_up(Given(data))


def run(datamodule, **settings) -> dict:
    return diagnose(datamodule, DiagnoseSettings(test_settings=FAST, **settings))


def test_reads_the_training_split_only_and_holds_out_by_unit():
    datamodule = population(2)
    pairs = training_pairs(datamodule, holdout=0.5, seed=0)
    sides = datamodule.split.pair_split
    assert set(sides[pairs.rows].tolist()) == {TRAIN, UNUSED}  # UNUSED: over the unseen cap
    assert torch.isin((sides == TRAIN).nonzero().flatten(), pairs.rows).all()
    assert pairs.num_pairs > int((sides == TRAIN).sum())  # the caps are off
    held_units = set(pairs.unit[pairs.held_out].tolist())
    fit_units = set(pairs.unit[~pairs.held_out].tolist())
    assert not held_units & fit_units and abs(len(held_units) - len(fit_units)) <= 1


def test_one_shared_reward_gives_no_evidence():
    figures = run(population(1))
    test = figures["disagreement"]
    assert test["statistic"] == "model" and test["permuted"] == "user ids across pairs"
    assert test["p_value"] > 0.05
    assert figures["verdict"]["line"].startswith("no evidence that users differ")
    assert figures["consensus"]["coverage"] == 0.0 and figures["consensus"]["ceiling"] == 0.5


def test_two_opposed_groups_differ():
    figures = run(population(2))
    test = figures["disagreement"]
    assert test["p_value"] < 0.01 and test["p_value"] == 1 / 201
    assert test["own_accuracy"] > test["shared_accuracy"] + 0.15 and test["own_wins"] > 0.6
    assert figures["verdict"]["line"].startswith("users differ beyond noise (p = 0.00498; own")
    assert figures["oracle_accuracy"] > figures["global_model"]["accuracy"]


def test_opposed_groups_with_user_ids_shuffled_give_no_evidence():
    figures = run(population(2), shuffle_users="pairs")
    assert figures["disagreement"]["p_value"] > 0.05
    assert figures["verdict"]["line"].startswith("no evidence")


def test_shared_items_opposed_groups_differ_and_their_group_consensus_wins(tmp_path):
    groups = tmp_path / "users.csv"
    groups.write_text("user_id,side\n" + "".join(f"user{u},{'ab'[u >= 15]}\n" for u in range(30)))
    figures = run(shared_items(opposed=True), groups=str(groups), group_by="side")
    test = figures["disagreement"]
    assert test["statistic"] == "items" and test["permuted"] == "user ids within units"
    assert test["p_value"] < 0.01 and figures["verdict"]["users_differ"]
    # opposed halves: everybody's consensus is a coin flip, each group's is its taste
    consensus = figures["consensus"]
    assert consensus["coverage"] == 1.0 and abs(consensus["ceiling"] - 0.5) < 0.08
    for row in figures["groups"]["groups"].values():
        assert row["group_where_both_cover"] > row["everyone_where_both_cover"] + 0.2
        assert row["group_where_both_cover"] > 0.8


def test_shared_items_one_reward_gives_no_evidence_and_a_high_ceiling():
    figures = run(shared_items(opposed=False))
    assert figures["disagreement"]["statistic"] == "items"
    assert figures["disagreement"]["p_value"] > 0.05
    assert figures["consensus"]["ceiling"] > 0.8
    assert figures["verdict"]["line"].startswith("no evidence")


def test_shared_items_shuffled_within_units_give_no_evidence():
    figures = run(shared_items(opposed=True), shuffle_users="units")
    assert figures["disagreement"]["p_value"] > 0.05
    assert figures["verdict"]["line"].startswith("no evidence")


def test_both_tests_can_be_forced():
    figures = run(shared_items(opposed=True), test="model")
    assert figures["disagreement"]["statistic"] == "model"
    assert figures["disagreement"]["p_value"] < 0.01


def test_mrm_diagnose_end_to_end(tmp_path, capsys):
    out = tmp_path / "diagnosis"
    main(["diagnose", "--config", str(REPO / "configs/tiny.yaml"), "--out", str(out),
          "--permutations", "20", "--ranks", "4"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "consensus ceiling 0.500" in printed
    verdict = [line for line in printed.splitlines() if line.startswith("verdict: ")]
    assert len(verdict) == 1 and ("users differ" in verdict[0] or "no evidence" in verdict[0])
    figures = json.loads((out / "diagnose.json").read_text())
    assert figures["verdict"]["line"] in verdict[0]
    assert len(figures["disagreement"]["null"]) == 20
    assert (out / "diagnose.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--holdout", "1.5"], "--holdout must be in (0, 1)"),
        (["--groups", "users.csv"], "--groups needs --group-by"),
        (["--seed_everything", "3"], "only --data.* settings are passed on"),
    ],
)
def test_mistakes_fail_with_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["diagnose", "--config", str(REPO / "configs/tiny.yaml"), "--out", str(tmp_path),
              "--permutations", "2", *argv])  # fmt: skip
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
