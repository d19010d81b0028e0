"""Two-process DDP on CPU (gloo): `mrm fit` runs end to end, and the processes stay in step.

Each run is a real `python -m mrm_lightning fit` subprocess with the DDPProbe callback
(tests/ddp_probe.py) appended to the config's callbacks; every process saves what it trained
on and ended with, and the tests compare the files.

The DDP run uses 2 users per process, so its global meta-batch is the 4 users that a
single-process run with 4 users per batch gets at the same step (each process takes its own
slice of the same shuffled order, and an episode depends only on (seed, epoch, user)): the two
runs must train the same model.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.subprocess_runs import REPO, TINY_FIT, subprocess_env

pytestmark = pytest.mark.slow

TIMEOUT_S = 300


def run_fit(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`mrm fit --config configs/tiny.yaml` with logs under ``out``; returns the probe folder."""
    probe = out / "probe"
    env = subprocess_env()
    command = [
        *TINY_FIT,
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_epochs",
        "2",
        "--trainer.logger.init_args.save_dir",
        str(out / "logs"),
        *args,
        "--trainer.callbacks+=ddp_probe.DDPProbe",
        "--trainer.callbacks.out_dir",
        str(probe),
    ]
    proc = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    return proc, probe


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


DDP = ("--trainer.devices", "2", "--trainer.strategy", "ddp")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc, probe = run_fit(out, *DDP, "--data.users_per_batch", "2")
    return out, proc, probe


@pytest.fixture(scope="module")
def ddp_ranks(ddp_run):
    _, proc, probe = ddp_run
    check_ok(proc)
    files = [probe / f"rank{r}.pt" for r in range(2)]
    missing = [str(f) for f in files if not f.exists()]
    assert not missing, f"missing probe files {missing}\n{proc.stderr}"
    return [torch.load(f, weights_only=False) for f in files]


def test_ddp_fit_completes_with_validation_and_checkpoint(ddp_run):
    out, proc, _ = ddp_run
    check_ok(proc)
    log = proc.stdout + proc.stderr
    assert "Expected to have finished reduction" not in log
    assert "Starting with 2 processes" in log
    checkpoints = sorted((out / "logs").rglob("*.ckpt"))
    assert checkpoints, f"ModelCheckpoint saved nothing under {out / 'logs'}\n{log}"
    # the checkpoint is selected on val/user_acc: validation ran and its metric was synced.
    state = torch.load(checkpoints[-1], weights_only=False, map_location="cpu")
    scores = [
        s["best_model_score"]
        for k, s in state["callbacks"].items()
        if k.startswith("ModelCheckpoint")
    ]
    assert scores and all(s is not None and torch.isfinite(s) for s in scores), scores


def test_ddp_ranks_agree_on_parameters_and_rpo_thresholds(ddp_ranks):
    rank0, rank1 = ddp_ranks
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert (rank0["global_rank"], rank1["global_rank"]) == (0, 1)
    assert rank0["params"].keys() == rank1["params"].keys() and rank0["params"]
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), f"{name} differs between ranks"
    t0, t1 = rank0["thresholds"], rank1["thresholds"]
    assert t0 is not None and t1 is not None, "RobustPersonalization not among the callbacks"
    assert len(t0) == len(t1) == len(rank0["step_users"]) > 0
    for step, (a, b) in enumerate(zip(t0, t1, strict=True)):
        assert a == b, f"step {step}: RPO threshold {a} on rank 0, {b} on rank 1"


def test_ddp_ranks_train_on_disjoint_users(ddp_ranks):
    rank0, rank1 = ddp_ranks
    steps0, steps1 = rank0["step_users"], rank1["step_users"]
    assert len(steps0) == len(steps1) == 6  # 12 seen users // (2 per process x 2) x 2 epochs
    for step, (users0, users1) in enumerate(zip(steps0, steps1, strict=True)):
        assert len(users0) == len(users1) == 2
        assert not set(users0) & set(users1), f"step {step}: both ranks got {users0}, {users1}"
    assert set(rank0["users"]) != set(rank1["users"])


def test_ddp_matches_single_process_with_the_same_global_batch(ddp_ranks, tmp_path):
    proc, probe = run_fit(tmp_path, "--trainer.devices", "1", "--data.users_per_batch", "4")
    check_ok(proc)
    single = torch.load(probe / "rank0.pt", weights_only=False)
    rank0, rank1 = ddp_ranks
    assert single["world_size"] == 1
    global_batches = [
        sorted(a + b) for a, b in zip(rank0["step_users"], rank1["step_users"], strict=True)
    ]
    assert global_batches == [sorted(users) for users in single["step_users"]]
    torch.testing.assert_close(
        torch.tensor(rank0["thresholds"]), torch.tensor(single["thresholds"])
    )
    assert rank0["params"].keys() == single["params"].keys()
    for name, value in single["params"].items():
        torch.testing.assert_close(rank0["params"][name], value, msg=f"{name}: DDP != 1 process")


def test_ddp_fit_then_test_writes_the_report(tmp_path):
    proc, _ = run_fit(tmp_path, *DDP, "--test_after_fit", "true")
    check_ok(proc)
    (path,) = (tmp_path / "logs").rglob("results.json")
    results = json.loads(path.read_text())
    calibration = results["calibration_unseen"]  # the probabilities gathered from both ranks
    assert 0 <= calibration["ece_point"] <= 1
    assert ("ece_posterior" in calibration) == (not results["w0_is_warm_start"])


def test_ddp_with_fewer_evaluation_users_than_processes(tmp_path):
    # one validation unit in all (the synthetic pairs are their own units): 1 validation user
    # for 2 processes, so one process has nobody to evaluate and must still take part.
    proc, _ = run_fit(tmp_path, *DDP, "--data.val_fraction", "0.002", "--test_after_fit", "true")
    check_ok(proc)
    (results,) = (tmp_path / "logs").rglob("results.json")
    assert results.exists()
    checkpoints = sorted((tmp_path / "logs").rglob("*.ckpt"))
    state = torch.load(checkpoints[-1], weights_only=False, map_location="cpu")
    scores = [s["best_model_score"] for k, s in state["callbacks"].items() if "Checkpoint" in k]
    # one user's validation accuracy: a multiple of 1 / (its pairs), finite, in [0, 1]
    assert scores and all(s is not None and 0 <= float(s) <= 1 for s in scores), scores
