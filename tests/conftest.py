import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _quiet_known_warnings():
    # Lightning's own deprecation noise on torch 2.13; not ours to fix.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__`.*")
    # unit tests call training_step without a Trainer on purpose
    warnings.filterwarnings("ignore", message=".*reference is not registered on the model.*")
    yield


@pytest.fixture
def tiny_args(tmp_path):
    """CLI arguments for a seconds-long run on configs/tiny.yaml, logging under tmp_path."""
    return [
        "--config",
        str(REPO / "configs/tiny.yaml"),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
    ]
