"""The `mrm` command: smoke runs of fit / test, the saved config, and start-up errors."""

import json
import subprocess
import sys

import pytest
import yaml

from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO


def test_fit_fast_dev_run(tiny_args):
    cli = cli_main(["fit", *tiny_args, "--trainer.fast_dev_run", "1"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


def test_fit_then_test_writes_results_config_and_checkpoint(tiny_args, tmp_path, capsys):
    cli = cli_main(["fit", *tiny_args, "--test_after_fit", "true"])
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    results = json.loads((run_dir / "results.json").read_text())
    rows = results["user_level_accuracy"]
    assert set(rows) == {
        "MRM (adapted)",
        "MRM w0, no adaptation",
        "global reward model",
        "oracle (true rewards)",
    }
    for row in rows.values():
        assert set(row) == {"seen", "unseen", "overall"}
        assert all(0.0 <= value <= 1.0 for value in row.values())
    assert "checkpoints" in results["checkpoint"]  # tested the checkpoint chosen on validation
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["source"]["init_args"]["embedding_dim"] == 8
    assert cli.model.hparams.embedding_dim == 8  # linked from the data source, given once
    out = capsys.readouterr().out
    assert "user-level accuracy" in out and "tensorboard --logdir" in out
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    # the checkpoint can be tested again on its own
    test_cli = cli_main(["test", *tiny_args, "--ckpt_path", results["checkpoint"]])
    assert test_cli.trainer.callback_metrics["test/user_acc"] == pytest.approx(
        results["metrics"]["test/user_acc"]
    )


def test_print_config_shows_the_schema():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mrm_lightning",
            "fit",
            "--config",
            str(REPO / "configs/tiny.yaml"),
            "--print_config",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    config = yaml.safe_load(out)
    assert config["model"]["inner_steps"] == 2
    assert config["data"]["source"]["class_path"] == "mrm_lightning.SyntheticPopulation"


@pytest.mark.parametrize(
    "flag, value, match",
    [
        ("--model.num_base_rewards", "0", "num_base_rewards"),
        ("--data.support_size", "100", "support_size"),
        ("--trainer.callbacks.tail_fraction", "1.5", "tail_fraction"),
    ],
)
def test_bad_settings_fail_at_start_up_naming_the_setting(tiny_args, flag, value, match):
    args = ["fit", *tiny_args, flag, value]
    if "callbacks" in flag:  # address the RPO callback (first in the list)
        args = [
            "fit",
            *tiny_args,
            "--trainer.callbacks+=mrm_lightning.RobustPersonalization",
            flag,
            value,
        ]
    with pytest.raises(ValueError, match=match):
        cli_main(args)


def test_hp_metric_is_the_selected_validation_accuracy_with_the_data_settings(tiny_args):
    from mrm_lightning.training.lightning_cli import cli_main

    cli = cli_main(
        ["fit", *tiny_args, "--trainer.enable_progress_bar", "false", "--test_after_fit", "true"]
    )
    best = float(cli.trainer.checkpoint_callback.best_model_score)
    # after the test of the selected checkpoint: its validation accuracy, not the -1 placeholder
    assert float(cli.trainer.callback_metrics["hp_metric"]) == pytest.approx(best)
    hparams = cli.datamodule.hparams
    assert hparams["source"] == "SyntheticPopulation" and hparams["support_size"] == 5
