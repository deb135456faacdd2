"""The three pipelines compiled to Kubeflow Pipelines specs through ZenML's own Kubeflow orchestrator (no cluster,
no Docker), loaded back with the kfp SDK, and each correction of distill_ner.kubeflow shown necessary.

kfp is installed once (pip, PyPI) into the build cache the tests use (DISTILL_NER_CACHE, conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill_ner import kubeflow

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "registry.example.com/distill-ner:test"
STEPS = {
    "distill_ner": {
        "sample_corpus",
        "annotate",
        "add_negatives",
        "build_sft",
        "train",
        "evaluate",
        "register_and_promote",
    },
    "evaluate_ner": {"evaluate_reference"},
    "distill_extraction": {
        "sample_corpus",
        "generate_templates",
        "fill_templates",
        "add_extraction_negatives",
        "build_extraction_sft",
        "train",
        "evaluate_extraction",
        "register_and_promote",
    },
}


def containers(spec: dict) -> dict[str, dict]:
    """Step name -> (task, container) of a compiled spec."""
    out = {}
    for task in spec["root"]["dag"]["tasks"].values():
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = spec["deploymentSpec"]["executors"][executor]["container"]
        step = container["args"][container["args"].index("--step_name") + 1]
        out[step] = {"task": task, "container": container}
    return out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    repo_zen = (ROOT / ".zen" / "config.yaml").read_bytes() if (ROOT / ".zen" / "config.yaml").exists() else None
    files = kubeflow.compile_pipelines(tmp_path_factory.mktemp("kfp"), IMAGE)
    after = (ROOT / ".zen" / "config.yaml").read_bytes() if (ROOT / ".zen" / "config.yaml").exists() else None
    assert after == repo_zen, "compiling must leave the repository's ZenML selection as it was"
    return files


@pytest.mark.slow
def test_every_pipeline_compiles_to_one_task_per_step_in_the_image(compiled: dict[str, Path]) -> None:
    assert set(compiled) == set(STEPS)
    for name, path in compiled.items():
        spec = yaml.safe_load(path.read_text())
        steps = containers(spec)
        assert set(steps) == STEPS[name], name
        for step, found in steps.items():
            container = found["container"]
            assert container["image"] == IMAGE, (name, step)
            assert container["command"] == ["python", "-m", "zenml.entrypoints.entrypoint"]
            assert "--snapshot_id" in container["args"]
    # the DAG is the pipeline's: each step waits for the steps whose outputs it reads
    ner = containers(yaml.safe_load(compiled["distill_ner"].read_text()))
    assert ner["train"]["task"]["dependentTasks"] == ["build-sft"]
    assert "dependentTasks" not in ner["sample_corpus"]["task"]


@pytest.mark.slow
def test_gpu_memory_and_retries_reach_the_gpu_steps_only(compiled: dict[str, Path]) -> None:
    """configs/remote_gpu.yaml: train asks 1 GPU, 32GB and 2 retries, evaluate 1 GPU; CPU steps ask nothing."""
    ner = containers(yaml.safe_load(compiled["distill_ner"].read_text()))
    train = ner["train"]["container"]["resources"]
    assert train["accelerator"]["count"] == "1" and train["accelerator"]["type"] == kubeflow.DEFAULT_ACCELERATOR
    assert train["resourceMemoryRequest"] == train["resourceMemoryLimit"] == "32G"
    assert ner["train"]["task"]["retryPolicy"]["maxRetryCount"] == 2
    assert ner["evaluate"]["container"]["resources"]["accelerator"]["count"] == "1"
    for cpu_step in ("sample_corpus", "annotate", "build_sft", "register_and_promote"):
        assert "resources" not in ner[cpu_step]["container"] and "retryPolicy" not in ner[cpu_step]["task"]
    extraction = containers(yaml.safe_load(compiled["distill_extraction"].read_text()))
    assert all("resources" not in s["container"] for s in extraction.values())  # extract_demo.yaml is CPU only


@pytest.mark.slow
def test_the_kfp_sdk_reads_every_spec_back(compiled: dict[str, Path]) -> None:
    """In a process that has kfp (the project's environment does not: kfp pins protobuf<7)."""
    code = (
        "import sys, json\n"
        "from kfp.components import load_component_from_file\n"
        "from google.protobuf import json_format\n"
        "from kfp.pipeline_spec import pipeline_spec_pb2\n"
        "import yaml\n"
        "for path in sys.argv[1:]:\n"
        "    load_component_from_file(path)\n"
        "    json_format.ParseDict(yaml.safe_load(open(path)), pipeline_spec_pb2.PipelineSpec())\n"
        "print('ok', len(sys.argv) - 1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(kubeflow.ensure_kfp())}
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, compiled.values())], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok 3", done.stderr[-3000:]


@pytest.mark.slow
def test_each_correction_is_needed(tmp_path: Path) -> None:
    """Without the memory correction ZenML's compile crashes; without the GPU one the GPU request is lost;
    without the retry one the retries are."""
    only = {"distill_ner": "configs/remote_gpu.yaml"}
    with pytest.raises(kubeflow.KubeflowError, match="expected string or bytes-like object"):
        kubeflow.compile_pipelines(tmp_path / "a", IMAGE, only, without=("memory",))
    path = kubeflow.compile_pipelines(tmp_path / "b", IMAGE, only, without=("gpu", "retries"))["distill_ner"]
    train = containers(yaml.safe_load(path.read_text()))["train"]
    assert "accelerator" not in train["container"].get("resources", {})
    assert "retryPolicy" not in train["task"]


def test_a_bad_pipeline_or_config_is_named_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(kubeflow.KubeflowError, match=r"unknown pipeline\(s\) \['nope'\]"):
        kubeflow.compile_pipelines(tmp_path, IMAGE, {"nope": "configs/demo.yaml"})
    with pytest.raises(kubeflow.KubeflowError, match="--config distill_ner=configs/missing.yaml: no such file"):
        kubeflow.compile_pipelines(tmp_path, IMAGE, {"distill_ner": "configs/missing.yaml"})
    assert not list(tmp_path.iterdir())


def test_the_command_line_reports_bad_arguments() -> None:
    from distill_ner import cli

    with pytest.raises(SystemExit, match="expected PIPELINE=FILE"):
        cli.main(["kubeflow", "compile", "--image", IMAGE, "--config", "distill_ner"])


# ------------------------------------------------------------------ the runner and the stack, no server


def test_the_runner_orders_tasks_by_the_dag(compiled: dict[str, Path]) -> None:
    for path in compiled.values():
        tasks = kubeflow.spec_tasks(yaml.safe_load(path.read_text()))
        seen: set[str] = set()
        for step, task in tasks.items():
            assert set(task["after"]) <= seen, (path.name, step, task["after"])
            seen.add(step)
            assert task["command"][:3] == ["python", "-m", "zenml.entrypoints.entrypoint"]
            assert task["env"]["KFP_RUN_ID"] == "{{$.pipeline_job_name}}"  # filled by the runner
    ner = kubeflow.spec_tasks(yaml.safe_load(compiled["distill_ner"].read_text()))
    assert list(ner)[:1] == ["sample_corpus"] and list(ner)[-1] == "register_and_promote"


def test_the_runner_names_a_bad_spec_an_unknown_step_and_a_placeholder_it_cannot_fill(
    compiled: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelineInfo: {name: x}\nroot: {}\n")
    with pytest.raises(kubeflow.KubeflowError, match=r"bad\.yaml: not a compiled Kubeflow pipeline spec"):
        kubeflow.run_spec(bad, tmp_path / "runs")
    with pytest.raises(kubeflow.KubeflowError, match=r"no step \['trian'\]; its steps: sample_corpus"):
        kubeflow.run_spec(compiled["distill_ner"], tmp_path / "runs", only=("trian",))
    with pytest.raises(kubeflow.KubeflowError, match=r"cannot fill the placeholder \{\{\$\.pipeline_root\}\}"):
        kubeflow._substitute("gs://{{$.pipeline_root}}/x", {"pipeline_job_name": "j"}, "spec step s")
    assert not (tmp_path / "runs").exists()  # refused before any task started


def test_a_kubeflow_stack_is_registered_only_on_a_server(zenml_env: dict[str, str]) -> None:
    """On a local store (no team server connected) the command refuses and says how to connect."""
    from tests.conftest import run_cli

    done = run_cli(
        ["distill-ner", "kubeflow", "stack", "--host", "https://kfp.invalid", "--registry", "r.invalid/t"], zenml_env
    )
    assert done.returncode != 0
    assert "a Kubeflow stack lives on the team's ZenML server" in done.stderr
    assert 'eval "$(distill-ner team-stack env)"' in done.stderr
    assert "Traceback" not in done.stderr
