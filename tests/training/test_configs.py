"""Every shipped config parses with the current package (its class paths resolve, its settings
exist): the configs a user starts from, and each peer's config on the data of the default."""

from __future__ import annotations

import pytest
import yaml

from mrm_lightning.bench.harness import build, method_args
from mrm_lightning.bench.methods import PEERS
from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
ADD_ONS = {"ddp.yaml": "synthetic.yaml"}  # stacked on top of another config


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_every_config_parses(config, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mrm"])  # pytest's own arguments are not the CLI's
    stack = ["--config", str(config)]
    if config.name in ADD_ONS:
        stack = ["--config", str(REPO / "configs" / ADD_ONS[config.name]), *stack]
    with pytest.raises(SystemExit) as stop:
        cli_main(["fit", *stack, "--print_config"])
    assert stop.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["source"]["class_path"].startswith("mrm_lightning.")


@pytest.mark.parametrize("peer", PEERS)
def test_every_peer_config_builds_on_the_default_data(peer, tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text(
        yaml.safe_dump({"data": yaml.safe_load((REPO / "configs/tiny.yaml").read_text())["data"]})
    )
    args = method_args(peer, REPO / "configs/tiny.yaml", data, REPO / "configs" / "peers")
    cli = build(peer, [*args, "--trainer.logger", "false"])
    assert type(cli.model).__module__.startswith("mrm_lightning.peers.")
