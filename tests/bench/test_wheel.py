"""``mrm bench`` from an installed wheel, away from the source tree: the configs it needs are
package data. The wheel is built here and installed (without dependencies) into a fresh venv
that borrows this environment's dependencies, so the test needs no download."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, str(REPO), "-w", str(root / "dist")], check=True, timeout=300)
    (wheel,) = (root / "dist").glob("mrm_lightning-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # this environment's dependencies, after the venv's own site-packages (which holds the
    # wheel: the editable install of the source tree is a .pth there, not read from here)
    borrowed = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    with open(f"{purelib}/zz_borrowed_dependencies.pth", "w") as handle:
        handle.write("\n".join(dict.fromkeys(borrowed)) + "\n")
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=300)
    return venv


def run(venv, *args, cwd):
    return subprocess.run(
        [str(venv / "bin" / "mrm"), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_bench_runs_from_the_wheel_without_the_source_tree(wheel_venv, tmp_path):
    where = "import mrm_lightning; print(mrm_lightning.__file__)"
    located = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", where],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(wheel_venv) in located and str(REPO) not in located  # the wheel, not the tree
    helped = run(wheel_venv, "bench", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "mrm bench" in helped.stdout
    assert helped.stdout.rstrip().endswith("(e.g. peers/grids.yaml)")  # the whole help, not cut
    out = tmp_path / "bench"
    args = ["bench", "--config", "tiny", "--methods", "global", "mrm", "--seeds", "0"]
    done = run(wheel_venv, *args, "--max_epochs", "2", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    methods = {record["method"] for record in results["runs"]}
    assert methods == {"global", "mrm"}
    assert (out / "results.md").is_file() and (out / "shots.png").is_file()
