"""Exact resume: a fit killed with SIGKILL and resumed from its last periodic checkpoint ends
where the uninterrupted fit ends, in the same run folder.

The slow tests run real `python -m mrm_lightning fit` subprocesses on configs/tiny.yaml with
5 epochs of 6 meta-batches (2 users per batch) and a ResumeCheckpoint every 5 steps: every
periodic checkpoint but the last (step 30, the end) falls mid-epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from mrm_lightning.data.datamodule import EpisodicDataModule
from mrm_lightning.data.episodes import MetaTrainBatches
from mrm_lightning.data.sources.synthetic import SyntheticPopulation
from mrm_lightning.training.checkpointing import (
    AtomicCheckpointIO,
    random_states,
    set_random_states,
)
from mrm_lightning.training.rpo import RobustPersonalization
from tests.subprocess_runs import REPO, TINY_FIT, subprocess_env

TIMEOUT_S = 300
STEPS_PER_EPOCH, EPOCHS, EVERY = 6, 5, 5  # 12 meta-training users / 2 per batch


# ------------------------------------------------------------------ the pieces, fast
def small_datamodule(**kwargs) -> EpisodicDataModule:
    source = SyntheticPopulation(num_users=24, embedding_dim=8, min_pairs=20, max_pairs=30)
    datamodule = EpisodicDataModule(source=source, users_per_batch=2, support_size=5, **kwargs)
    datamodule.setup("fit")
    return datamodule


def test_meta_batches_resume_after_the_batches_done_in_that_epoch_only():
    datamodule = small_datamodule()
    make = datamodule.train_dataloader().dataset
    fresh = list(make)
    assert len(fresh) == STEPS_PER_EPOCH
    resumed = MetaTrainBatches(
        make.data, make.train_pairs, make.users, 2, 5, None, make.seed, resume=(0, 4)
    )
    tail = list(resumed)
    assert len(tail) == 2
    for got, want in zip(tail, fresh[4:], strict=True):
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got)
    assert len(list(resumed)) == STEPS_PER_EPOCH  # once: the next pass is a whole epoch
    other_epoch = MetaTrainBatches(
        make.data, make.train_pairs, make.users, 2, 5, None, make.seed, resume=(3, 4)
    )
    assert len(list(other_epoch)) == STEPS_PER_EPOCH  # the position is for epoch 3 only


def test_datamodule_hands_the_loaded_position_to_the_training_batches():
    datamodule = small_datamodule()
    fresh = list(datamodule.train_dataloader())
    datamodule.load_state_dict({"train_position": {"epoch": 0, "batches_done": 5}})
    (last,) = list(datamodule.train_dataloader())
    assert torch.equal(last["user"], fresh[5]["user"])
    datamodule.teardown("fit")
    assert len(list(datamodule.train_dataloader())) == STEPS_PER_EPOCH


def test_rpo_thresholds_survive_a_state_dict_round_trip():
    saved = RobustPersonalization()
    saved.thresholds = [0.5, 0.25]
    resumed = RobustPersonalization()
    resumed.load_state_dict(saved.state_dict())
    assert resumed.thresholds == [0.5, 0.25]


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save(random_states(), tmp_path / "states.pt")
    expected = torch.rand(3), np.random.rand(3), random.random()
    set_random_states(torch.load(tmp_path / "states.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_atomic_checkpoint_io_keeps_the_previous_file_when_a_save_fails(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        io.save_checkpoint({"step": torch.tensor(2), "bad": lambda: None}, path)
    assert int(torch.load(path, weights_only=True)["step"]) == 1
    assert os.listdir(path.parent) == ["last.ckpt"]  # no temporary file left behind


# ------------------------------------------------------------ real runs, killed, slow
def fit_command(save_dir: Path, *args: str) -> list[str]:
    return [
        *TINY_FIT,
        "--trainer.max_epochs",
        str(EPOCHS),
        "--data.users_per_batch",
        "2",
        "--test_after_fit",
        "true",
        "--trainer.logger.init_args.save_dir",
        str(save_dir),
        "--trainer.callbacks+=mrm_lightning.training.checkpointing.ResumeCheckpoint",
        "--trainer.callbacks.every_n_train_steps",
        str(EVERY),
        "--trainer.callbacks+=ddp_probe.DDPProbe",
        "--trainer.callbacks.out_dir",
        str(save_dir / "probe"),
        *args,
    ]


def start(command: list[str], log: Path) -> subprocess.Popen:
    env = subprocess_env()
    # its own process group: killing it kills every DDP process, as losing the node would
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, log: Path) -> None:
    assert process.wait(timeout=TIMEOUT_S) == 0, log.read_text()[-5000:]


def checkpoint_step(path: Path) -> int | None:
    try:  # written by rename, so a file that exists is whole
        return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])
    except FileNotFoundError:
        return None


def kill_after_checkpoint(process: subprocess.Popen, last: Path, step: int, log: Path) -> int:
    """SIGKILL the run's process group once ``last`` holds ``step`` or later; returns the step
    of the checkpoint left behind."""
    deadline = time.monotonic() + TIMEOUT_S
    while (checkpoint_step(last) or 0) < step:
        assert process.poll() is None, f"the run ended before step {step}\n{log.read_text()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    return checkpoint_step(last)


def final_state(run: Path) -> tuple[dict, dict, dict]:
    """(last.ckpt's state_dict, the probe's record, results.json) of a run folder."""
    (last,) = run.rglob("last.ckpt")
    state = torch.load(last, weights_only=True, map_location="cpu")
    probe = torch.load(run / "probe" / "rank0.pt", weights_only=False)
    (results,) = run.rglob("results.json")
    return state, probe, json.loads(results.read_text())


def assert_same_run(resumed: Path, uninterrupted: Path) -> None:
    state, probe, results = final_state(resumed)
    want_state, want_probe, want_results = final_state(uninterrupted)
    assert state["global_step"] == want_state["global_step"] == STEPS_PER_EPOCH * EPOCHS
    assert state["state_dict"].keys() == want_state["state_dict"].keys()
    for name, value in want_state["state_dict"].items():
        torch.testing.assert_close(state["state_dict"][name], value, msg=name)
    assert probe["thresholds"] == pytest.approx(want_probe["thresholds"], abs=1e-6)
    assert len(probe["thresholds"]) == STEPS_PER_EPOCH * EPOCHS  # the list continued
    assert want_probe["step_users"][-len(probe["step_users"]) :] == probe["step_users"]
    tested = {k: v for k, v in results["metrics"].items() if k.startswith("test")}
    assert tested and tested == pytest.approx(
        {k: want_results["metrics"][k] for k in tested}, abs=1e-6
    )
    for row, values in want_results["user_level_accuracy"].items():
        assert results["user_level_accuracy"][row] == pytest.approx(values, abs=1e-6), row


def run_killed_and_resumed(tmp_path: Path, *extra: str) -> tuple[Path, Path, int]:
    """The uninterrupted fit and a fit killed mid-epoch then resumed, side by side; returns
    both folders and the step the resumed run started from."""
    full, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = start(fit_command(full, *extra), tmp_path / "uninterrupted.log")
    victim = start(fit_command(killed, *extra), tmp_path / "killed.log")
    last = killed / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    step = kill_after_checkpoint(victim, last, 2 * EVERY, tmp_path / "killed.log")
    assert step % STEPS_PER_EPOCH and step < STEPS_PER_EPOCH * EPOCHS, f"step {step}"
    resume = fit_command(
        killed, "--trainer.logger.init_args.version", "0", "--ckpt_path", "last", *extra
    )
    finish(start(resume, tmp_path / "resumed.log"), tmp_path / "resumed.log")
    finish(reference, tmp_path / "uninterrupted.log")
    return full, killed, step


@pytest.mark.slow
def test_a_killed_fit_resumed_from_its_last_checkpoint_ends_as_the_uninterrupted_one(tmp_path):
    full, killed, step = run_killed_and_resumed(tmp_path)
    assert_same_run(killed, full)
    # one run folder: the resumed run logged and checkpointed where the killed one had
    assert sorted(p.name for p in (killed / "tiny").iterdir()) == ["version_0"]
    run = killed / "tiny" / "version_0"
    writers = {path.name.split(".")[-2] for path in run.glob("events.out.tfevents.*")}
    assert len(writers) == 2  # event files of two processes: the killed one and the resumed one
    resumed_from = run / "checkpoints" / "last.ckpt"
    log = (tmp_path / "resumed.log").read_text()
    assert f"Restoring states from the checkpoint path at {resumed_from}" in log
    results = json.loads((run / "results.json").read_text())
    assert results["checkpoint"].startswith(str(run / "checkpoints"))


@pytest.mark.slow
def test_a_killed_two_process_ddp_fit_resumes_to_the_uninterrupted_one(tmp_path):
    # 1 user per process: the same global meta-batch of 2, so the same 6 steps per epoch
    ddp = ("--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.users_per_batch", "1")
    full, killed, _ = run_killed_and_resumed(tmp_path, *ddp)
    assert_same_run(killed, full)
    assert sorted(p.name for p in (killed / "tiny").iterdir()) == ["version_0"]
