"""Data that loaded trains to the end: a ratings file with large units, and PRISM-shaped data
with configs/prism.yaml, for 3 seeds each (episodes used to crash mid-run on both)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO
from tests.data.test_prism import write_prism_files
from tests.tiny_encoder import build_tiny_bert

pytestmark = pytest.mark.slow

WORDS = "the cat rain cloud water name prime sentence".split()


def ratings_csv(path: Path, raters: int = 40, texts: int = 120, per_rater: int = 50) -> Path:
    """Raters scoring overlapping subsets of short texts 1-5, like a public ratings set."""
    rng = random.Random(0)
    pool = [" ".join(rng.choice(WORDS) for _ in range(4)) + f" {i}" for i in range(texts)]
    lines = ["user_id,text,score"]
    for rater in range(raters):
        taste = rng.random()
        for index in rng.sample(range(texts), per_rater):
            score = 1 + min(4, int(5 * ((index / texts + taste) % 1.0)))
            lines.append(f"rater{rater},{pool[index]},{score}")
    path.write_text("\n".join(lines) + "\n")
    return path


def fit_to_the_end(config: str, overrides: dict, seed: int) -> None:
    args = ["fit", "--config", str(REPO / config)]
    settings = {
        **overrides,
        "seed_everything": seed,
        "data.seed": seed,
        "trainer.max_epochs": 3,
        "trainer.accelerator": "cpu",
        "trainer.check_val_every_n_epoch": 1,
        "trainer.enable_progress_bar": "false",
    }
    cli = cli_main(args + [a for k, v in settings.items() for a in (f"--{k}", str(v))])
    assert cli.trainer.state.finished and cli.trainer.current_epoch == 3
    assert cli.trainer.global_step == 3 * cli.trainer.num_training_batches > 0
    results = json.loads(
        next(Path(settings["trainer.logger.init_args.save_dir"]).rglob("results.json")).read_text()
    )
    assert results["test_users"]["overall"] > 0


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ratings_with_support_10_and_40_pairs_per_user_trains_to_the_end(
    seed, tmp_path, tiny_bert_folder
):
    csv = ratings_csv(tmp_path / "ratings.csv")
    fit_to_the_end(
        "configs/ratings.yaml",
        {
            "data.source.init_args.paths": json.dumps([str(csv)]),
            "data.source.init_args.seed": seed,
            "data.source.init_args.cache_dir": tmp_path / "cache",
            "data.source.init_args.progress": "false",
            "data.source.init_args.encoder.init_args.model": tiny_bert_folder,
            "data.source.init_args.encoder.init_args.max_length": 32,
            "data.source.init_args.encoder.init_args.device": "cpu",
            "data.support_size": 10,
            "data.min_pairs_per_user": 40,
            "trainer.logger.init_args.save_dir": tmp_path / "runs",
        },
        seed,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prism_shaped_data_with_the_prism_config_trains_to_the_end(
    seed, tmp_path, tiny_bert_folder
):
    conversations, survey = write_prism_files(tmp_path)
    fit_to_the_end(
        "configs/prism.yaml",
        {
            "data.source.init_args.conversations": conversations,
            "data.source.init_args.survey": survey,
            "data.source.init_args.cache_dir": tmp_path / "cache",
            "data.source.init_args.progress": "false",
            "data.source.init_args.encoder.init_args.model": tiny_bert_folder,
            "data.source.init_args.encoder.init_args.max_length": 32,
            "data.source.init_args.encoder.init_args.device": "cpu",
            "trainer.logger.init_args.save_dir": tmp_path / "runs",
        },
        seed,
    )
