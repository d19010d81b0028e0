"""experiments/elicitation.py: a seconds-long run on the tiny population reports accuracies for
every strategy and number of answers, and active questioning never asks a pair twice."""

import importlib.util
import json

import pytest

from tests.conftest import REPO
from tests.use.test_inference import STRONG_CLUSTERS

pytestmark = pytest.mark.slow  # a 6-epoch fit and a questioning run: ~30 s of CPU

# adapting always (no warm-start fallback), clean clusters; unseen users have 15 training
# pairs, fewer than the 16 answers of the last point: the pool caps it
OVERRIDES = [a for k, v in STRONG_CLUSTERS.items() for a in (f"--{k}", str(v))]


@pytest.fixture(scope="module")
def elicitation():
    spec = importlib.util.spec_from_file_location(
        "elicitation", REPO / "experiments" / "elicitation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(elicitation, tmp_path_factory):
    out = tmp_path_factory.mktemp("elicitation")
    argv = ["--config", str(REPO / "configs/tiny.yaml"), "--seeds", "0", "--out", str(out),
            "--json", str(out / "r.json"), "--png", str(out / "r.png"), "--time-choice",
            *OVERRIDES]  # fmt: skip
    return out, elicitation.main(argv)


def test_every_strategy_and_count_is_an_accuracy(run):
    out, payload = run
    assert json.loads((out / "r.json").read_text()) == payload
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for strategy in ("active", "random"):
        assert list(payload[strategy]) == ["1", "2", "4", "8", "16"]
        assert all(0.0 <= acc <= 1.0 for acc in payload[strategy].values())
        assert all(std == 0.0 for std in payload["std"][strategy].values())  # one seed
    seed = payload["per_seed"]["0"]
    assert seed["users"]["max_pool"] <= 15 < 16
    # 16 answers is the whole pool for every user: both strategies asked the same pairs
    assert payload["active"]["16"] == pytest.approx(payload["random"]["16"], abs=1e-9)
    # the whole pool is exactly what the run's own test table scored on unseen users
    assert seed["all"]["all"] == pytest.approx(seed["test_table_unseen"], abs=1e-6)
    assert 0.0 < payload["oracle"]["ceiling"] <= 1.0
    assert payload["next_pairs_1_of_1000_ms"] > 0
    assert payload["commands"][0].startswith("mrm fit --config")
    assert payload["config"].endswith("tiny.yaml") and payload["overrides"] == OVERRIDES


def test_active_questions_are_distinct_pool_pairs_and_the_run_is_reused(elicitation, run):
    out, payload = run
    args = elicitation.fit_args(str(REPO / "configs/tiny.yaml"), 0, OVERRIDES)
    checkpoint, _ = elicitation.train_or_reuse(args, out / "tiny" / "seed_0")  # no training
    assert str(checkpoint) == payload["per_seed"]["0"]["checkpoint"]
    model = elicitation.PersonalizedRewardModel.from_checkpoint(checkpoint, device="cpu")
    datamodule = elicitation.datamodule_of(args)
    unseen = [int(u) for u in datamodule.split.unseen_users]
    pools = {str(u): elicitation.user_pairs(datamodule, elicitation.TRAIN, u) for u in unseen}
    generator = elicitation.torch.Generator().manual_seed(0)
    orders = elicitation.active_orders(model, pools, generator, most=16)
    for user, order in orders.items():
        size = len(pools[user]["chosen"])
        assert len(order) == min(16, size) and len(set(order)) == len(order)
        assert all(0 <= i < size for i in order)
