"""OpenRLHF's own reward client, for testing `mrm serve` against it: the two files of the
released wheel that post reward requests (``openrlhf/utils/agent.py`` and the
``logging_utils.py`` it imports), never committed here.

``python -m tests.openrlhf_client`` (run by ``make test``) downloads the wheel once with pip
(``--no-deps``) and keeps the two files under ``.cache/openrlhf/``. The package's own
``__init__`` pulls in Ray, DeepSpeed and more, so the files are loaded alone, under their own
module names. Offline, the download fails with a note and the tests that need the client skip,
naming this command.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

VERSION = "0.11.2"
FOLDER = Path(__file__).resolve().parents[1] / ".cache" / "openrlhf" / VERSION
FILES = ("utils/logging_utils.py", "utils/agent.py")


def fetch() -> bool:
    """Download the wheel and keep the two files; False (with a note) where pip cannot."""
    if all((FOLDER / name).is_file() for name in FILES):
        return True
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        command += ["--dest", scratch, f"openrlhf=={VERSION}"]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(scratch).glob("openrlhf-*.whl"))
        if done.returncode or not wheels:
            print(f"note: could not download openrlhf {VERSION} (offline?); the OpenRLHF client "
                  "tests will skip", file=sys.stderr)  # fmt: skip
            return False
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in FILES:
                member = next(m for m in wheel.namelist() if m.endswith(f"openrlhf/{name}"))
                target = FOLDER / name
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(".partial")
                partial.write_bytes(wheel.read(member))
                partial.replace(target)  # atomic: a file here is always whole
    return True


def load_agent() -> types.ModuleType | None:
    """OpenRLHF's ``agent`` module (its ``SingleTurnAgentExecutor``), or None if not fetched."""
    if not all((FOLDER / name).is_file() for name in FILES):
        return None
    saved = {name: sys.modules.get(name) for name in ("openrlhf", "openrlhf.utils")}
    for name in saved:  # empty packages: the real __init__ files import half of PyPI
        package = types.ModuleType(name)
        package.__path__ = []
        sys.modules[name] = package
    try:
        modules = {}
        for name in FILES:
            dotted = "openrlhf." + name.removesuffix(".py").replace("/", ".")
            spec = importlib.util.spec_from_file_location(dotted, FOLDER / name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[dotted] = module
            spec.loader.exec_module(module)
            modules[dotted] = module
        return modules["openrlhf.utils.agent"]
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        for dotted in ("openrlhf.utils.logging_utils", "openrlhf.utils.agent"):
            sys.modules.pop(dotted, None)


if __name__ == "__main__":
    fetch()
