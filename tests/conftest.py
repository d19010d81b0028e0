import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the clone: real data for experiments, and for the tests that read it. CI has
# it; a user's clone does not, and those tests then skip, saying why.
SHARED = REPO.parent / "shared"


def needs_shared(relative: str) -> pytest.MarkDecorator:
    """Skip unless ``../shared/RELATIVE`` exists (with the reason a reader of the skip needs)."""
    path = SHARED / relative
    return pytest.mark.skipif(
        not path.exists(), reason=f"{path} is absent (../shared/{relative} beside the clone)"
    )


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
