"""The main job on its built-in default: MRM closes >= 70% of the global-to-oracle gap."""

import json

import pytest

from mrm_lightning.data.splits import TRAIN
from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO


@pytest.mark.slow
def test_default_synthetic_job_closes_most_of_the_gap_on_unseen_users(tmp_path):
    cli = cli_main(
        [
            "fit",
            "--config",
            str(REPO / "configs/synthetic.yaml"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    dm = cli.datamodule
    assert max(len(dm.pairs_by_split[TRAIN][u]) for u in dm.split.unseen_users.tolist()) <= 20
    results = json.loads(next(tmp_path.rglob("results.json")).read_text())
    rows = results["user_level_accuracy"]
    oracle, glob = rows["oracle (true rewards)"]["unseen"], rows["global reward model"]["unseen"]
    assert oracle - glob >= 0.10  # personalization matters in this population
    assert results["unseen_gap_closed"] >= 0.7
    assert rows["MRM (adapted)"]["unseen"] > rows["MRM w0, no adaptation"]["unseen"]
