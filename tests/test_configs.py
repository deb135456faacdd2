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

from distill_ner.ner.config import DistillConfig

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


def _step_names(pipeline) -> set[str]:
    """Names of the steps a pipeline module uses (its step objects), for checking `steps:` keys."""
    import sys

    from zenml.steps import BaseStep

    module = sys.modules[pipeline.entrypoint.__module__]
    return {obj.name for obj in vars(module).values() if isinstance(obj, BaseStep)}


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


def unknown_zenml_keys(raw: dict) -> list[str]:
    """ZenML tolerates unknown keys in a run config; a typo there must still fail our test."""
    from zenml.config import DockerSettings, ResourceSettings
    from zenml.config.step_configurations import StepConfigurationUpdate

    settings_models = {"docker": DockerSettings, "resources": ResourceSettings}
    unknown = [k for k in raw if k not in PipelineRunConfiguration.model_fields]

    def check_settings(settings: dict, where: str) -> None:
        for name, value in (settings or {}).items():
            model = settings_models.get(name)
            if model is not None:
                unknown.extend(f"{where}.settings.{name}.{k}" for k in value if k not in model.model_fields)

    check_settings(raw.get("settings"), "")
    for step_name, step in (raw.get("steps") or {}).items():
        unknown.extend(f"steps.{step_name}.{k}" for k in step if k not in StepConfigurationUpdate.model_fields)
        check_settings(step.get("settings"), f"steps.{step_name}")
    return unknown


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"demo.yaml", "smoke.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_validates(path: Path):
    raw = yaml.safe_load(path.read_text())
    PipelineRunConfiguration.model_validate({k: v for k, v in raw.items() if k != "parameters"})
    assert not unknown_zenml_keys(raw), unknown_zenml_keys(raw)
    pipeline = launched_pipeline(path)
    assert set(raw.get("steps") or {}) <= set(pipeline.invocations or {}) | set(_step_names(pipeline)), raw["steps"]
    schema = config_schema(pipeline)
    schema.model_validate(raw["parameters"]["config"], context={"skip_path_checks": True})
    from distill_ner.paths import looks_local

    for key, value in path_values(raw["parameters"]["config"]):
        if looks_local(value) and not value.startswith(SETUP_MADE):
            assert (ROOT / value).exists(), f"{path.name}: {key} names a missing path {value}"


def test_zenml_typo_is_caught():
    assert unknown_zenml_keys(
        {"enable_cachee": True, "steps": {"train": {"settings": {"resources": {"gpu_countt": 1}}}}}
    ) == [
        "enable_cachee",
        "steps.train.settings.resources.gpu_countt",
    ]


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


def test_every_config_field_is_described():
    """Descriptions appear in validation errors and generated docs: no field without one."""
    from pydantic import BaseModel

    from distill_ner import config as core_config
    from distill_ner.extraction import config as extraction_config
    from distill_ner.ner import config as ner_config

    undescribed = [
        f"{cls.__module__}.{cls.__name__}.{name}"
        for module in (core_config, ner_config, extraction_config)
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == module.__name__
        for name, field in cls.model_fields.items()
        if not field.description
    ]
    assert undescribed == []
