"""``mrm --help`` lists every command, and help for the argparse commands answers without
loading torch or Lightning (what made every command pay seconds before doing anything)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mrm_lightning.cli.main import COMMANDS

PROBE = """
import sys
from mrm_lightning.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(name for name in ("torch", "lightning", "transformers") if name in sys.modules)
print("HEAVY", heavy)
"""


def help_output(*argv: str) -> tuple[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=list(argv))],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    *text, last = done.stdout.rstrip().splitlines()
    assert last.startswith("HEAVY ")
    return "\n".join(text), eval(last.removeprefix("HEAVY "))


def test_mrm_help_lists_every_command_without_heavy_imports():
    text, heavy = help_output("--help")
    for command in ("fit", "validate", "test", "predict", "embed", "adapt", "score", "serve"):
        assert f"  {command} " in text
    assert "  bench " in text and set(COMMANDS) == {*text.split()} & set(COMMANDS)
    assert heavy == []


@pytest.mark.parametrize(
    "command", ["adapt", "score", "serve", "bench", "diagnose", "encoder-tune"]
)
def test_argparse_commands_help_without_heavy_imports(command):
    text, heavy = help_output(command, "--help")
    assert text.startswith(f"usage: mrm {command} ")
    assert heavy == []


def test_an_unknown_command_names_the_commands(capsys):
    from mrm_lightning.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["fitt"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "mrm: error: unknown command 'fitt'; the commands are "
        + ", ".join(COMMANDS)
        + " (mrm --help)"
    )
