"""Determinism: the same seed and config give the same parameters and metrics, on CPU.

Two real `python -m mrm_lightning fit` subprocesses on configs/tiny.yaml, with different
PYTHONHASHSEED values (so nothing may depend on the iteration order of a set of strings).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.subprocess_runs import REPO, TINY_FIT

pytestmark = pytest.mark.slow

TIMEOUT_S = 300


def start(out: Path, hash_seed: str) -> subprocess.Popen:
    command = [
        *TINY_FIT,
        "--test_after_fit",
        "true",
        "--trainer.logger.init_args.save_dir",
        str(out),
        # 2 epochs of 3 steps: last.ckpt is written after the last step
        "--trainer.callbacks+=mrm_lightning.training.checkpointing.ResumeCheckpoint",
        "--trainer.callbacks.every_n_train_steps",
        "3",
    ]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    log = (out.parent / f"{out.name}.log").open("w")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_two_runs_with_the_same_seed_end_identical(tmp_path):
    runs = {name: tmp_path / name for name in ("first", "second")}
    processes = [start(out, seed) for out, seed in zip(runs.values(), ("1", "2"))]
    for name, process in zip(runs, processes):
        log = (tmp_path / f"{name}.log").read_text
        assert process.wait(timeout=TIMEOUT_S) == 0, log()[-5000:]
    checkpoints, results = [], []
    for out in runs.values():
        (last,) = out.rglob("last.ckpt")
        checkpoints.append(torch.load(last, weights_only=True, map_location="cpu"))
        (report,) = out.rglob("results.json")
        results.append(json.loads(report.read_text()))
    first, second = checkpoints
    assert first["global_step"] == second["global_step"] == 6
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for name, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][name]), f"{name} differs between runs"
    for state_a, state_b in zip(
        first["optimizer_states"][0]["state"].values(),
        second["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        for key, value in state_a.items():
            assert torch.equal(value, state_b[key]), f"optimizer state {key} differs"
    rpo = "RobustPersonalization"
    assert first["callbacks"][rpo]["thresholds"] == second["callbacks"][rpo]["thresholds"]
    assert results[0]["metrics"] and results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["user_level_accuracy"] == results[1]["user_level_accuracy"]
