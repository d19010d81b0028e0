"""After a fit: the per-user adaptation gain as a histogram PNG, with a sign test in
results.json and one printed line."""

import json

import pytest
import torch

from mrm_lightning.training.gain_histogram import gain_sign_test, write_gain_histogram
from mrm_lightning.training.lightning_cli import cli_main

PNG = b"\x89PNG\r\n\x1a\n"


def test_gain_sign_test_by_hand():
    before = torch.zeros(12)
    adapted = torch.tensor([1.0] * 9 + [-1.0] + [0.0] * 2)  # 9 helped, 1 hurt, 2 unchanged
    assert gain_sign_test(adapted, before) == pytest.approx(22 / 1024)
    assert gain_sign_test(before, before) == 1.0


def test_histogram_png_also_when_nothing_changed(tmp_path):
    accuracy = torch.rand(20, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "gain.png"
    write_gain_histogram(path, {"seen": (accuracy + 0.1, accuracy), "unseen": (accuracy, accuracy)})
    assert path.read_bytes()[:8] == PNG


def test_the_report_adds_the_histogram_and_the_sign_test(tiny_args, tmp_path, capsys):
    cli_main(["fit", *tiny_args, "--test_after_fit", "true"])
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    results = json.loads((run_dir / "results.json").read_text())
    for group in ("seen", "unseen"):
        assert 0.0 <= results["adaptation_gain"][group]["sign_test_p"] <= 1.0
    assert results["adaptation_gain_plot"] == str(run_dir / "adaptation_gain.png")
    assert (run_dir / "adaptation_gain.png").read_bytes()[:8] == PNG
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Sign test")]
    assert len(lines) == 1 and "seen p = " in lines[0] and "adaptation_gain.png" in lines[0]
