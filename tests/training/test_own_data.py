"""The README's "your own data in five minutes": a pairs CSV with its own column names, fitted
with configs/pairs.yaml and only the paths and the column mapping; and what a run says when the
data or the settings leave nothing to learn from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mrm_lightning.cli import main
from mrm_lightning.training.lightning_cli import cli_main
from mrm_lightning.training.report import _selection_line
from tests.conftest import REPO
from tests.tiny_encoder import build_tiny_bert


def own_data_script():
    spec = importlib.util.spec_from_file_location("own_data", REPO / "experiments/own_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_opposed_groups_are_personalized_from_the_readme_path_alone(tmp_path):
    own = own_data_script()
    # 30 users x 20 pairs: half prefer short answers, half long ones (90% consistently)
    data = own.write_own_pairs(tmp_path / "pairs.csv", users=30, pairs=20, seed=0)
    assert data.read_text().splitlines()[0] == "annotator,question,good_answer,bad_answer"
    bert = build_tiny_bert(
        tmp_path / "bert", max_positions=512
    )  # answers are long: 1 token a letter
    cli = cli_main(
        ["fit", "--config", str(REPO / "configs/pairs.yaml"),
         "--data.source.init_args.paths", f"[{data}]",
         "--data.source.init_args.columns", own.COLUMNS,
         # the test's stand-ins for the default encoder and the working folders
         "--data.source.init_args.encoder.init_args.model", str(bert),
         "--data.source.init_args.encoder.init_args.max_length", "512",
         "--data.source.init_args.cache_dir", str(tmp_path / "cache"),
         "--data.source.init_args.progress", "false",
         "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
         "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    run = Path(cli.trainer.log_dir)
    results = json.loads((run / "results.json").read_text())
    rows = results["user_level_accuracy"]
    mrm, global_model = rows["MRM (adapted)"]["unseen"], rows["global reward model"]["unseen"]
    # one shared reward cannot serve both groups; adapting to a user's own pairs does
    assert global_model < 0.65
    assert mrm > global_model + 0.2, rows
    assert results["selected_adaptation"]["prior"] == "meta-learned"
    assert results["adaptation_gain"]["unseen"]["helped"] >= 0.6


def test_a_run_whose_users_are_all_removed_names_the_rule_and_leaves_no_run_folder(
    tmp_path, capsys, tiny_args, monkeypatch
):
    monkeypatch.setenv("MRM_DEBUG", "")
    with pytest.raises(SystemExit) as stop:
        main(["fit", *tiny_args, "--data.min_pairs_per_user", "1000"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "mrm: error: no user is left to train on: 24 of the 24 users were removed (24 users "
        "with fewer than min_pairs_per_user=1000 pairs): lower data.min_pairs_per_user"
    )
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.rglob("*"))


def test_no_seen_user_left_says_which_setting_took_them(tmp_path, capsys, tiny_args, monkeypatch):
    monkeypatch.setenv("MRM_DEBUG", "")
    with pytest.raises(SystemExit):
        main(["fit", *tiny_args, "--data.unseen_fraction", "0.99"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "mrm: error: no meta-training episode can be drawn: every one of the 24 users kept is "
        "an unseen or validation user: lower data.unseen_fraction or data.validation_users"
    )


def test_few_validation_users_are_warned_about(tiny_args):
    with pytest.warns(UserWarning, match=r"only 2 validation users .* raise data.validation_users"):
        cli_main(
            ["fit", *tiny_args, "--data.validation_users", "0.2", "--trainer.fast_dev_run", "1"]
        )


def test_a_kept_warm_start_says_when_few_validation_users_voted():
    selected = {"prior": "warm start", "validated_on": "validation users", "lr_scale": 1.0}
    few = _selection_line({**selected, "validation_users": 3})
    assert "Only 3 validation users voted" in few and "data.validation_users" in few
    assert "voted" not in _selection_line({**selected, "validation_users": 40})
