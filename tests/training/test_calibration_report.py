"""The test stage measures calibration: ``test/ece`` (posterior) and ``test/ece_point``, and the
report writes them to results.json with a reliability diagram of the unseen users' pairs."""

import json

import pytest
from PIL import Image

from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO
from tests.use.test_inference import STRONG_CLUSTERS


@pytest.mark.parametrize("adaptation", ["gradient", "posterior"])
def test_the_report_measures_calibration(tmp_path, adaptation):
    overrides = {**STRONG_CLUSTERS, "trainer.max_epochs": 2,
                 "trainer.logger.init_args.save_dir": tmp_path}  # fmt: skip
    if adaptation == "posterior":
        overrides |= {"model.combination": "softmax", "model.adaptation": "posterior",
                      "model.inner_steps": 1}  # fmt: skip
    args = [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    cli_main(
        ["fit", "--config", str(REPO / "configs/tiny.yaml"), *args, "--test_after_fit", "true"]
    )
    results = json.loads(next(tmp_path.rglob("results.json")).read_text())
    calibration = results["calibration_unseen"]
    for name in ("point", "posterior"):
        assert 0 <= calibration[f"ece_{name}"] <= 1
        assert 0 <= calibration[f"brier_{name}"] <= 1
    for key in ("test/ece", "test/ece_point", "test_unseen/ece", "test/brier"):
        assert 0 <= results["metrics"][key] <= 1, key
    if adaptation == "gradient":  # validation chose the Laplace prior's precision from the grid
        chosen = results["selected_adaptation"]["posterior_prior_precision"]
        assert chosen in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    temperature = results["selected_adaptation"]["posterior_temperature"]
    assert temperature in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0)
    with Image.open(calibration["plot"]) as image:
        assert image.size[0] > 300 and image.getextrema() != ((255, 255),) * 3  # drawn on


def test_a_prior_precision_that_is_not_positive_is_refused(tmp_path):
    with pytest.raises(ValueError, match="model.posterior_prior_precisions must be one or more"):
        cli_main(["fit", "--config", str(REPO / "configs/tiny.yaml"),
                  "--model.posterior_prior_precisions", "[1.0, 0]",
                  "--trainer.logger.init_args.save_dir", str(tmp_path)])  # fmt: skip


def test_validation_keeps_the_prior_precision_and_temperature_of_least_nll():
    import torch

    from mrm_lightning.training.module import MetaRewardModel

    model = MetaRewardModel(embedding_dim=4, posterior_prior_precisions=(1.0, 10.0),
                            posterior_temperatures=(0.5, 1.0, 2.0),
                            adaptation_lr_scales=(0.0, 1.0))  # fmt: skip
    grid = model.val_metrics["all"]["posterior_nll_1"]
    # under precision 10, probabilities 0.6 of pairs that all went one way (as if under-
    # confident): the sharpest temperature fits best; under precision 1, 0.55: worse
    grid.update(torch.tensor([[0.55, 0.55], [0.6, 0.6]]))
    losses = grid.compute()
    p = torch.tensor(0.6, dtype=torch.float64)
    expected = -torch.nn.functional.logsigmoid(torch.logit(p) / 0.5)  # hand: T = 0.5, L = 10
    assert float(losses[1, 0]) == pytest.approx(float(expected))
    model._select_posterior(1)
    assert float(model.selected_prior_precision) == 10.0
    assert float(model.selected_temperature) == 0.5
