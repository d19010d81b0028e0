"""What tests that run `mrm fit` as real subprocesses share: the command and a clean env."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
#: `python -m mrm_lightning fit` on the seconds-long config (run with cwd=REPO)
TINY_FIT = [sys.executable, "-m", "mrm_lightning", "fit", "--config", "configs/tiny.yaml"]
# variables a launcher around pytest might have set; a DDP run must pick its own.
DIST_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
)


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment without distributed settings, with tests/ importable (the probes)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return {**env, **extra}
