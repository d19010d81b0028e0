"""Every method tuned alike (mrm bench --grid): the same number of settings per method, each
fitted and scored on validation users, the best tested once; the report states the choices."""

from __future__ import annotations

import json

import pytest

from mrm_lightning.bench.grids import describe, read_grid, setting_args
from mrm_lightning.bench.methods import METHODS
from mrm_lightning.cli.bench import main
from tests.conftest import REPO


def test_the_shipped_grid_gives_every_method_the_same_budget():
    grid = read_grid(REPO / "configs/peers/grids.yaml", list(METHODS))
    assert {len(points) for points in grid.values()} == {4}


def test_a_grid_must_give_every_method_the_same_number_of_settings(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("global: [{a: 1}, {a: 2}]\nmrm: [{b: 1}]\n")
    with pytest.raises(
        ValueError, match=r"grid.yaml: every method needs the same number .*global 2, mrm 1"
    ):
        read_grid(path, ["global", "mrm"])
    with pytest.raises(ValueError, match=r"grid.yaml: no grid for lore"):
        read_grid(path, ["global", "lore"])


def test_settings_become_command_line_arguments():
    settings = {"model.init_args.l2_grid": [0.0, 0.1], "model.num_base_rewards": 8}
    assert setting_args(settings) == [
        "--model.init_args.l2_grid", "[0.0, 0.1]", "--model.num_base_rewards", "8",
    ]  # fmt: skip
    assert describe(settings) == "l2_grid=[0.0, 0.1], num_base_rewards=8"


@pytest.mark.slow
def test_bench_keeps_the_setting_best_on_validation_and_says_so(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "global:\n  - {model.init_args.l2_grid: [10.0]}\n  - {model.init_args.l2_grid: [0.0]}\n"
        "mrm:\n  - {model.num_base_rewards: 2}\n  - {model.num_base_rewards: 4}\n"
    )
    out = tmp_path / "bench"
    main(["--config", "tiny", "--methods", "global", "mrm", "--seeds", "0",
          "--max_epochs", "2", "--grid", str(grid), "--out", str(out)])  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["grid"] == str(grid)
    for run in results["runs"]:
        scores = [point["val_user_acc"] for point in run["grid"]]
        assert len(scores) == 2
        chosen = run["grid"][scores.index(max(scores))]["settings"]  # the first of a tie
        assert run["settings"] == chosen and run["val_user_acc"] == max(scores)
    table = (out / "results.md").read_text()
    assert "2 trained settings per method and seed" in table
    assert "| global | l2_grid=" in table and "| mrm | num_base_rewards=" in table
