"""The package's layout rules: import contracts (pyproject.toml [tool.importlinter]) and the ruff check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"ner", "extraction"}
# the command line composes the recipes (each registers its subcommands): it is the one non-recipe module
# allowed to import them
COMPOSERS = {"cli"}


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_import_contracts_hold():
    """The core never imports a recipe, recipes never import each other, no import cycles."""
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_core_module_is_under_contract():
    """A new top-level module is core unless it is a recipe: it must be listed as a source of the contract."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (core_contract,) = [c for c in config if c["id"] == "core-never-imports-a-recipe"]
    listed = {m.removeprefix("distill_ner.") for m in core_contract["source_modules"]}
    package = ROOT / "distill_ner"
    present = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert present - RECIPES - COMPOSERS == listed, "update source_modules of core-never-imports-a-recipe"


def test_ruff_check_passes():
    """ruff (config in pyproject.toml [tool.ruff]) over the files it is enforced on."""
    result = subprocess.run(
        [_tool("ruff"), "check", "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    """`ruff format` (line length 120, pyproject.toml [tool.ruff]) leaves every file as it is."""
    result = subprocess.run(
        [_tool("ruff"), "format", "--check", "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, "run `ruff format`:\n" + result.stdout + result.stderr


def test_every_step_source_dependency_loads_in_a_fresh_process():
    """ZenML loads a step's cache source dependencies (modules such as `distill_ner.corpus`) by import path, as
    an attribute of their package, in the step's own process. Where nothing imported the submodule first (a
    Kubeflow pod, `distill-ner kubeflow run`), that attribute exists only through the packages' `__getattr__`
    (distill_ner.import_submodule): without it 22 of these failed and every such step died before starting."""
    import importlib
    import json
    import pkgutil

    import steps

    paths: set[str] = set()
    for info in pkgutil.walk_packages(steps.__path__, "steps."):
        for value in vars(importlib.import_module(info.name)).values():
            policy = getattr(getattr(value, "configuration", None), "cache_policy", None)
            if policy is not None and policy.source_dependencies:
                paths |= {source.import_path for source in policy.source_dependencies}
    assert any(p.startswith("distill_ner.ner.") for p in paths) and "distill_ner.corpus" in paths
    code = (
        "import json, sys\n"
        "from zenml.utils import source_utils\n"
        "failed = []\n"
        "for path in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        source_utils.load(path)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{path}: {exc}')\n"
        "print(json.dumps(failed))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(sorted(paths))], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
