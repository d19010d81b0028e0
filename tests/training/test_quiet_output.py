"""What `make train` shows, as a user sees it: no warnings or tips, progress before the table, and
the table (with where to find the results) last."""

from __future__ import annotations

import subprocess

from tests.subprocess_runs import REPO, TINY_FIT, subprocess_env

NOISE = ("Warning", "warning", "deprecated", "Tip:")


def test_fit_and_test_print_no_warning_and_end_with_the_table(tmp_path):
    command = [
        *TINY_FIT,
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "true",  # as make train: its bar must come first
        "--test_after_fit", "true",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    noisy = [line for line in output.splitlines() if any(word in line for word in NOISE)]
    assert noisy == []
    lines = done.stdout.rstrip().splitlines()
    table = lines.index(next(line for line in lines if line.startswith("user-level accuracy")))
    after = lines[table:]
    assert not any("━" in line or "Testing" in line for line in after), after
    assert after[-1].startswith("  open them with: tensorboard --logdir")
    assert any(line.startswith("Best checkpoint: ") for line in after)
