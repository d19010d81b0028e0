"""The benchmark harness: its pure functions by hand, MRM with and without RPO differing only
by the callback, and a run end to end on the tiny config (2 methods x 2 seeds)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from mrm_lightning import RobustPersonalization
from mrm_lightning.bench.harness import build, method_args
from mrm_lightning.bench.methods import CONFIGS
from mrm_lightning.bench.protocol import mean_std, truncate_support, worst_fraction_mean
from mrm_lightning.bench.report import worst_users_line
from mrm_lightning.cli.bench import main, parse
from tests.conftest import REPO


def test_worst_fraction_mean_by_hand():
    twelve = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0, 0.0, 0.55]
    # 10% of 12 users is 1.2: the worst ceil(1.2) = 2 users, 0.0 and 0.1
    assert worst_fraction_mean(twelve, 0.1) == pytest.approx(0.05)
    assert worst_fraction_mean(twelve[:10], 0.1) == pytest.approx(0.1)  # 1 user of 10
    assert worst_fraction_mean([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(1.5)
    assert worst_fraction_mean([0.7], 0.1) == pytest.approx(0.7)  # at least one user
    assert worst_fraction_mean(torch.tensor([0.5, 0.25]), 1.0) == pytest.approx(0.375)
    assert math.isnan(worst_fraction_mean([], 0.1))
    with pytest.raises(ValueError):
        worst_fraction_mean(twelve, 0.0)


def test_mean_std_over_seeds():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, 0.1414213562))
    assert mean_std([0.8]) == (0.8, 0.0)


def test_truncated_support_is_a_seeded_subset_of_each_users_pairs():
    mask = torch.tensor(
        [[True] * 5 + [False], [True, True] + [False] * 4, [False] * 6]
    )  # 5, 2 and 0 real pairs
    users = torch.tensor([7, 3, 9])
    kept = truncate_support(mask, users, shots=3, seed=0)
    assert kept.sum(1).tolist() == [3, 2, 0]
    assert not (kept & ~mask).any()  # never a padding position
    assert torch.equal(kept, truncate_support(mask, users, shots=3, seed=0))
    # a user's subset depends on the user, not its row in the batch
    alone = truncate_support(mask[:1], users[:1], shots=3, seed=0)
    assert torch.equal(alone[0], kept[0])
    subsets = {tuple(truncate_support(mask, users, 3, seed)[0].tolist()) for seed in range(8)}
    assert len(subsets) > 1  # the seed changes which pairs are kept


def test_mrm_and_mrm_rpo_differ_only_by_the_rpo_callback(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text("data: {}\n")
    config = CONFIGS / "synthetic.yaml"
    runs = {}
    for method in ("mrm", "mrm_rpo"):
        args = method_args(method, config, data, CONFIGS / "peers")
        logs = ["--trainer.logger.init_args.save_dir", str(tmp_path)]
        runs[method] = build(method, [*args, *logs])
    kinds = {m: [type(c).__name__ for c in cli.trainer.callbacks] for m, cli in runs.items()}
    assert any(isinstance(c, RobustPersonalization) for c in runs["mrm_rpo"].trainer.callbacks)
    assert not any(isinstance(c, RobustPersonalization) for c in runs["mrm"].trainer.callbacks)
    assert "ModelCheckpoint" in kinds["mrm"]
    assert runs["mrm"].model.hparams == runs["mrm_rpo"].model.hparams


def test_benchmark_end_to_end_on_the_tiny_config(tmp_path):
    out = tmp_path / "bench"
    argv = ["--config", str(REPO / "configs/tiny.yaml"), "--methods", "global", "vpl"]
    overrides = ["--data.max_train_pairs_unseen", "6"]
    main([*argv, "--seeds", "0", "1", "--max_epochs", "3", "--out", str(out), *overrides])
    results = json.loads((out / "results.json").read_text())
    assert results["data_overrides"] == overrides  # recorded with the results
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [
        ("global", 0), ("global", 1), ("vpl", 0), ("vpl", 1)
    ]  # fmt: skip
    shots = ["1", "2", "4", "8", "16", "32", "all"]
    for run in results["runs"]:
        for key in ("seen", "unseen", "overall", "worst10_unseen", "val_user_acc"):
            assert 0.0 <= run[key] <= 1.0, (key, run)
        assert run["worst10_unseen"] <= run["unseen"]
        assert list(run["shots_unseen"]) == shots
        assert run["shots_unseen"]["all"] == run["unseen"]
        assert run["train_s"] > 0 and run["eval_s"] > 0
    for method, entry in results["summary"].items():
        runs = [r for r in results["runs"] if r["method"] == method]
        assert entry["seeds"] == [0, 1]
        assert entry["unseen"]["mean"] == pytest.approx(sum(r["unseen"] for r in runs) / 2)
        assert entry["worst10_unseen"]["std"] >= 0.0
    # the global model ignores the user's pairs: its curve is flat
    curve = [results["summary"]["global"]["shots_unseen"][n]["mean"] for n in shots]
    assert max(curve) - min(curve) < 1e-6
    table = (out / "results.md").read_text()
    for method in ("global", "vpl"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        unseen = results["summary"][method]["unseen"]
        assert f"{unseen['mean']:.3f} ± {unseen['std']:.3f}" in row
    assert "worst 10% unseen" in table and "shots.png" in table
    assert "--data.max_train_pairs_unseen 6" in table
    image = Image.open(out / "shots.png").convert("RGB")
    assert image.size == (1100, 640)
    colours = set(image.getdata())
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # a line per method


def test_only_data_settings_are_passed_on_to_every_method():
    args = parse(["--out", "x", "--data.source.init_args.paths", "[a.jsonl]"])
    assert args.data_overrides == ["--data.source.init_args.paths", "[a.jsonl]"]
    with pytest.raises(SystemExit):  # a model setting would not fit every method's model
        parse(["--out", "x", "--model.inner_lr", "3"])


def test_worst_users_line_names_the_best_and_mrm_rpos_distance():
    def entry(value: float) -> dict:
        return {"worst10_unseen": {"mean": value, "std": 0.0}}

    summary = {"lore": entry(0.50), "mrm": entry(0.55), "mrm_rpo": entry(0.53)}
    line = worst_users_line(summary)
    assert "mrm (0.550)" in line and "mrm_rpo is -0.020" in line
    summary["mrm_rpo"] = entry(0.60)
    assert "mrm_rpo (0.600), ahead of the next method by 0.050" in worst_users_line(summary)
    summary["mrm_rpo"] = entry(0.55)
    assert "ties" in worst_users_line(summary)
