"""experiments/calibration.py on the tiny config: one seed, the JSON and the diagram."""

import importlib.util
import json
import math

from tests.conftest import REPO


def load_script():
    spec = importlib.util.spec_from_file_location(
        "calibration_experiment", REPO / "experiments/calibration.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calibration_experiment_writes_its_json_and_diagram(tmp_path):
    script = load_script()
    out = tmp_path / "tiny.json"
    script.main(
        [
            "--config", str(REPO / "configs/tiny.yaml"), "--seeds", "0",
            "--json", str(out), "--png-dir", str(tmp_path),
            "--prior-precisions", "0.3", "3",
            # validation users to choose on, and adaptation (not the warm start) always
            "--data.validation_users", "0.25", "--model.warm_start", "false",
        ]
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["seeds"] == [0] and result["prior_precision_grid"] == [0.3, 3.0]
    (seed,) = result["per_seed"]
    assert seed["posterior_kind"] == "laplace"
    assert seed["prior_precision"] in (0.3, 3.0) and seed["prior_precision_calibrated"] in (
        0.3,
        3.0,
    )
    for name in ("temperature_point", "temperature_posterior"):
        assert 0.01 <= seed[name] <= 100
    assert seed["validation"]["users"] > 0 and seed["test_unseen"]["pairs"] > 0
    assert 0 < seed["share_label_1"] < 1  # pairs shown in a random order
    ways = {"point", "posterior", "point_calibrated", "posterior_calibrated"}
    assert set(seed["metrics"]) == set(result["summary"]) == ways
    for way in ways:
        values = seed["metrics"][way]
        assert 0 <= values["ece"] <= 1 and 0 <= values["brier"] <= 1
        assert 0 <= values["accuracy"] <= 1 and math.isfinite(values["nll"]) and values["nll"] > 0
        assert result["summary"][way]["ece"] == {"mean": values["ece"], "std": 0.0, "seeds": 1}
    png = tmp_path / "reliability_tiny.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
