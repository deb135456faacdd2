"""A `models:/` reference the registry does not know says which store and stack were asked, and what to run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_a_missing_registered_model_names_the_store_and_the_stack(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ZENML_CONFIG_PATH": str(tmp_path / "zenml"),
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "ZENML_ANALYTICS_OPT_IN": "false",
        # Python's own traceback: rich's wraps long lines, here inside the store's path
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
    }
    env.pop("ZENML_REPOSITORY_PATH", None)
    code = "from distill_ner.models import resolve_reference; resolve_reference('models:/distill-ner@production')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode != 0
    message = done.stderr
    assert f"LookupError: models:/distill-ner@production: not in the MLflow registry at sqlite:///{tmp_path}" in message
    assert "(active ZenML stack: default)" in message and "run `distill-ner setup`" in message
