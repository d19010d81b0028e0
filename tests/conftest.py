import importlib.util
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


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1 for the session (tests/postgres_server.py).
    Without PostgreSQL installed the test skips, saying how to install it; CI sets
    MRM_REQUIRE_POSTGRES=1 so that there it fails instead."""
    import os

    from tests.postgres_server import PostgresServer, binaries

    if binaries() is None or importlib.util.find_spec("psycopg") is None:
        reason = "PostgreSQL or psycopg is absent (python -m tests.postgres_server; make install)"
        if os.environ.get("MRM_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason}, and MRM_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server, request):
    """A new, empty database of its own for each test: its URL."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    name += f"_{len(_DATABASES)}"
    _DATABASES.append(name)
    return postgres_server.create_database(name)


_DATABASES: list[str] = []
