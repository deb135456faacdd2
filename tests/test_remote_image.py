"""The remote GPU config's image and resources, checked without a Docker engine or a cluster: the
Dockerfile ZenML would build from its DockerSettings, and which steps ask for a GPU."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "configs/remote_gpu.yaml").read_text())


def test_image_is_cuda_with_the_project_installed_after_its_source():
    from zenml.config import DockerSettings
    from zenml.utils.pipeline_docker_image_builder import PipelineDockerImageBuilder

    settings = DockerSettings.model_validate(RAW["settings"]["docker"])
    # the code must be in the image: a local project install is only possible after `COPY . .`
    assert settings.allow_including_files_in_images
    assert not settings.allow_download_from_code_repository and not settings.allow_download_from_artifact_store
    lines = PipelineDockerImageBuilder._generate_zenml_pipeline_dockerfile(settings.parent_image, settings).splitlines()
    assert lines[0].startswith("FROM pytorch/pytorch:") and "cuda" in lines[0]
    install = next(i for i, line in enumerate(lines) if "-e '.[gpu]'" in line)
    assert lines.index("COPY . .") < install and lines[install].startswith("RUN pip install")


def test_gpus_only_for_train_and_evaluate_with_retries():
    from zenml.config import ResourceSettings
    from zenml.config.retry_config import StepRetryConfig

    asking = set()
    for name, step in RAW["steps"].items():
        settings = step.get("settings", {})
        kubeflow = ResourceSettings.model_validate(settings.get("resources", {})).gpu_count or 0
        kubernetes = int(
            settings.get("orchestrator.kubernetes", {})
            .get("pod_settings", {})
            .get("resources", {})
            .get("limits", {})
            .get("nvidia.com/gpu", 0)
        )
        assert kubeflow == kubernetes, name  # the same request whichever orchestrator runs it
        if kubeflow:
            asking.add(name)
        # the Kubernetes orchestrator supports no retry delay or backoff: only the count is set
        retry = StepRetryConfig.model_validate(step["retry"])
        assert retry.max_retries >= 1 and retry.delay == 0 and retry.backoff == 0
    assert asking == {"train", "evaluate"}
