"""Personalization that adapts only where users differ, chosen on validation users inside fit.

Two synthetic populations with known truth: one where every user has the same taste (the
selected MRM must match one global model) and one where tastes differ strongly (it must adapt
and win by a wide margin).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def fit(tmp_path: Path, *population: str) -> dict:
    cli_main(
        [
            "fit", "--config", str(REPO / "configs/synthetic.yaml"),
            "--data.validation_users", "0.2",
            "--data.source.init_args.num_users", "200",
            "--trainer.max_epochs", "30",
            "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path),
            *population,
        ]
    )  # fmt: skip
    return json.loads(next(tmp_path.rglob("results.json")).read_text())


def test_users_who_agree_get_the_global_model(tmp_path):
    results = fit(
        tmp_path,
        "--data.source.init_args.num_clusters", "1",
        "--data.source.init_args.cluster_spread", "0",
        "--data.source.init_args.hard_user_fraction", "0",
    )  # fmt: skip
    rows = results["user_level_accuracy"]
    for column in ("seen", "unseen", "overall"):
        gap = rows["MRM (adapted)"][column] - rows["global reward model"][column]
        assert abs(gap) <= 0.01, (column, rows)
    assert results["selected_adaptation"]["validated_on"] == "validation users"
    # the warm start was kept, and the w0 row is it: the same fit as the global row
    assert results["w0_is_warm_start"]
    assert rows["MRM w0, no adaptation"] == pytest.approx(rows["global reward model"], abs=1e-6)


def test_users_who_differ_get_adapted_and_win(tmp_path):
    results = fit(tmp_path)
    rows = results["user_level_accuracy"]
    assert results["selected_adaptation"]["lr_scale"] > 0
    assert rows["MRM (adapted)"]["unseen"] - rows["global reward model"]["unseen"] >= 0.10
    gain = results["adaptation_gain"]["unseen"]
    # measured on 100 unseen users: helped 0.84 and hurt 0.10 (mean gain +0.17) with leak-free
    # selection, helped 0.78 and hurt 0.12 before it (0.84 with the earlier sampler): the bar
    # says "most users gain, few lose", not one run's exact share
    assert gain["mean"] > 0.1 and gain["helped"] >= 0.75 and gain["hurt"] <= 0.15
