"""Every config in configs/ is loaded and validated against the schema of the pipeline it launches."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

from distill_ner.config import DistillConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
# folders that `distill-ner setup` creates; a config may name them before they exist
SETUP_MADE = (".cache/models/",)


def launched_pipeline(path: Path):
    """The pipeline a config launches, read from its `zenml pipeline run <source> -c` header line."""
    match = re.search(r"zenml pipeline run ([\w.]+) -c", path.read_text())
    assert match, f"{path.name}: no launch command in its header comment"
    module, _, attr = match.group(1).rpartition(".")
    return getattr(importlib.import_module(module), attr)


def config_schema(pipeline):
    return inspect.signature(pipeline.entrypoint).parameters["config"].annotation


def path_values(obj, key=""):
    """(dotted key, value) for every string value under a key that names a path or model."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from path_values(v, f"{key}.{k}" if key else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from path_values(v, f"{key}[{i}]")
    elif isinstance(obj, str) and re.search(r"(path|model|recorded_responses(\[\d+\])?)$", key):
        yield key, obj


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"demo.yaml", "smoke.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_validates(path: Path):
    raw = yaml.safe_load(path.read_text())
    PipelineRunConfiguration.model_validate({k: v for k, v in raw.items() if k != "parameters"})
    schema = config_schema(launched_pipeline(path))
    schema.model_validate(raw["parameters"]["config"], context={"skip_path_checks": True})
    from distill_ner.config import looks_local

    for key, value in path_values(raw["parameters"]["config"]):
        if looks_local(value) and not value.startswith(SETUP_MADE):
            assert (ROOT / value).exists(), f"{path.name}: {key} names a missing path {value}"


def test_unknown_key_is_named():
    raw = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())["parameters"]["config"]
    raw["train"]["learning_rat"] = 1e-4
    with pytest.raises(ValidationError, match=r"train\.learning_rat"):
        DistillConfig.model_validate(raw, context={"skip_path_checks": True})


def test_wrong_type_is_named():
    raw = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())["parameters"]["config"]
    raw["train"]["max_steps"] = "forty"
    with pytest.raises(ValidationError, match=r"train\.max_steps"):
        DistillConfig.model_validate(raw, context={"skip_path_checks": True})


def test_missing_data_path_is_named(tmp_path: Path):
    raw = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())["parameters"]["config"]
    raw["corpus"]["sources"][0]["path"] = str(tmp_path / "nowhere.jsonl")
    raw["student"]["model"] = str(tmp_path)
    with pytest.raises(ValidationError, match="nowhere.jsonl"):
        DistillConfig.model_validate(raw)
