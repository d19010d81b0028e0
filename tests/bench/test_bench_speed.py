"""experiments/bench_speed.py: a seconds-long run reports every number, and its pieces agree."""

import importlib.util
import json
import math

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_speed", REPO / "experiments" / "bench_speed.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = (
    "--users 24 --pairs 12 --dim 8 --k 2 --meta-batch 4 --support 2 --query 6 "
    "--eval-batch 8 --repeats 1 --warmup 0"
).split()


def test_a_tiny_run_reports_every_number(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = bench.main([*TINY, "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    for key in (
        "batched_over_per_user",
        "batched_over_reference",
        "epoch_over_lower_bound",
        "peak_memory_bytes",
        "trainer_epoch_seconds",
        "lower_bound_seconds",
    ):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["settings"]["users"] == 24 and result["cpu_threads"] >= 1
    assert set(result["eval_seconds"]) == {"val", "test"}
    # the engines compute the same meta-gradient, so their timings compare like with like
    assert result["gradient_relative_gap"] < 1e-3
    # a batch of 4 users with 2 support pairs each: the episode shape the run reports is real
    assert result["episode_pairs_per_user"]["support_real"] == pytest.approx(2.0)
    assert result["meta_train_users_per_epoch"] % 4 == 0
    assert result["framework_reads_pair_differences"]  # linear base functions
    assert "epoch / lower bound" in capsys.readouterr().out


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_the_three_engines_give_the_same_meta_gradient(bench, inner_optimizer):
    # two inner steps large enough to move w visibly; input scale 1 keeps gradients far above
    # Adam's eps, which the reference-style loop places outside the root, the framework inside
    args = bench.parse_args(
        [*TINY, "--steps", "2", "--inner-lr", "0.5", "--input-scale", "1"]
        + ["--inner-optimizer", inner_optimizer]
    )
    dm, model, _ = bench.build(args)
    pairs, differences = next(iter(dm.meta_train_loader())), next(iter(dm.meta_train_loader(True)))
    models = {name: bench.copy.deepcopy(model) for name in bench.ENGINES}
    # the framework on pair differences (as Trainer.fit gives them), the loops on both sides
    batches = {name: differences if name == "framework" else pairs for name in bench.ENGINES}
    assert bench.check_same_gradients(models, batches) < 1e-4


def test_a_compact_table_is_reported_at_its_size(bench):
    half = bench.main([*TINY, "--embedding-dtype", "float16"])
    assert half["embedding_dtype"] == "float16" and half["pairs"] == 24 * 12
    assert half["table_bytes"] == 24 * 12 * 2 * 8 * 2  # pairs x 2 rows x D x 2 bytes
    assert half["table_bytes_per_million_pairs"] == pytest.approx(2 * 8 * 2 * 1e6)
    assert half["lower_bound_bytes"] == half["lower_bound_rows"] * 8 * 2
    assert half["gradient_relative_gap"] < 1e-3
