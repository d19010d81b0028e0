"""The house rules, checked: sub-packages import only downward (import-linter's contracts in
pyproject.toml), no import cycle among modules (imports inside functions count), small files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import grimp
import pytest

from tests.conftest import REPO

PACKAGE = REPO / "src" / "mrm_lightning"
MAX_LINES = 400


def import_cycles(package: str) -> list[list[str]]:
    """Every set of modules of ``package`` that import each other in a circle (strongly
    connected components of the import graph with more than one module, or a self-import)."""
    graph = grimp.build_graph(package, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle_among_the_packages_modules():
    assert import_cycles("mrm_lightning") == []


def test_the_cycle_check_finds_a_cycle_through_an_import_inside_a_function(tmp_path, monkeypatch):
    package = tmp_path / "circular"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("def late():\n    from . import second\n")
    (package / "second.py").write_text("from .first import late\n")
    (package / "third.py").write_text("from . import first\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("circular") == [["circular.first", "circular.second"]]


def lint_imports(cwd) -> subprocess.CompletedProcess:
    command = [shutil.which("lint-imports", path=str(REPO / ".venv" / "bin")) or "lint-imports"]
    return subprocess.run(
        [*command, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_layers_contract_holds():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_layers_contract_fails_an_upward_import(tmp_path):
    # the project's own contracts, on a copy of the package with one upward import added
    copy = tmp_path / "src" / "mrm_lightning"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with (copy / "method" / "heads.py").open("a") as handle:
        handle.write(
            textwrap.dedent(
                """
                def upward():
                    from ..training.module import MetaRewardModel

                    return MetaRewardModel
                """
            )
        )
    env_path = f"{tmp_path / 'src'}"
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"],
        cwd=tmp_path,
        env={"PYTHONPATH": env_path, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "mrm_lightning.method.heads -> mrm_lightning.training.module" in result.stdout


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_source_file_is_over_400_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)}: {lines} lines (split it by concern)"
