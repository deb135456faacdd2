"""`zenml pipeline run pipelines.distill_ner.distill_ner -c configs/smoke.yaml` in isolated ZenML/MLflow stores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

PIPELINE = ["zenml", "pipeline", "run", "pipelines.distill_ner.distill_ner", "-c"]


def inspect(env) -> dict:
    done = run_cli([sys.executable, "tests/inspect_run.py", "distill_ner", "distill-ner-smoke"], env)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_smoke_run_end_to_end_then_cached(tiny_student, zenml_env):
    setup = run_cli(["distill-ner", "stack"], zenml_env)
    assert setup.returncode == 0, setup.stderr[-4000:]

    secret = "sk-distill-ner-test-7f3c9a1e5b"
    zenml_env["OPENAI_API_KEY"] = secret  # the teacher's key variable: it must never be written anywhere
    first = run_cli(PIPELINE + ["configs/smoke.yaml"], zenml_env, timeout=900)
    assert first.returncode == 0, (first.stdout + first.stderr)[-6000:]
    state = inspect(zenml_env)
    first_keys = (set(state["mlflow_params"]), set(state["mlflow_metrics"]))
    assert "sft.negatives_position" in first_keys[0] and "teacher.entities" in first_keys[1]
    assert state["run_status"].lower().endswith("completed")
    steps = state["steps"]
    assert set(steps) == {
        "sample_corpus",
        "annotate",
        "add_negatives",
        "build_sft",
        "train",
        "evaluate",
        "register_and_promote",
    }
    assert steps["sample_corpus"]["outputs"]["passages"]["passages"] == 24
    annotations = steps["annotate"]["outputs"]["annotations"]
    assert annotations["passages"] + annotations["failures"] == 24
    assert annotations["entities"] > 100
    assert steps["add_negatives"]["outputs"]["annotations_with_negatives"]["negatives"] > 0
    assert steps["build_sft"]["outputs"]["sft_dataset"]["rows"] >= annotations["passages"]
    assert steps["evaluate"]["outputs"]["eval_report"]["predictions"] == 4 * 8
    assert "distill_ner_demo.f1" in steps["evaluate"]["outputs"]["eval_report"]

    metrics = state["mlflow_metrics"]
    assert "eval.distill_ner_demo.f1" in metrics and "eval.avg_f1" in metrics
    assert "eval.distill_ner_demo.abstention_rate" in metrics and "eval.grounded.avg_f1" in metrics
    assert metrics["eval.grounded.distill_ner_demo.hallucination_rate"] == 0.0
    assert metrics["eval.grounded.distill_ner_demo.unparseable_rate"] == 0.0
    assert len(state["loss_history"]["train/loss"]) == 4
    versions = state["model_versions"]
    assert len(versions) == 1 and "production" in versions[0]["aliases"]
    # the run's console ends with what it registered, the gate's decision and what to do next
    output = first.stdout + first.stderr
    assert "v1 (models:/" in output and "gate: promoted to production; pass: floor: avg F1" in output
    assert "F1 per benchmark: distill_ner_demo " in output and "Next: make ui" in output
    assert "distill-ner predict --model models:/" in output

    # ZenML's store, its artifacts and the MLflow store and artifacts all live under ZENML_CONFIG_PATH
    leaked = [
        str(path)
        for path in Path(zenml_env["ZENML_CONFIG_PATH"]).rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]
    assert not leaked and secret not in first.stdout + first.stderr, leaked

    # An identical rerun: every step with unchanged inputs comes from the cache; the teacher is not asked.
    second = run_cli(PIPELINE + ["configs/smoke.yaml"], zenml_env, timeout=900)
    assert second.returncode == 0, (second.stdout + second.stderr)[-6000:]
    state = inspect(zenml_env)
    assert state["runs"] == 2
    statuses = {name: s["status"] for name, s in state["steps"].items()}
    assert all(
        status.lower().endswith("cached") for name, status in statuses.items() if name != "register_and_promote"
    ), statuses
    assert len(state["model_versions"]) == 1, "a cached rerun must not register the same model twice"

    # Training again, every step before it from the cache: the MLflow run still carries the cached steps'
    # params and metrics (replayed from what they recorded when they ran), so runs compare key for key.
    retrain = Path(zenml_env["ZENML_CONFIG_PATH"]) / "retrain.yaml"
    retrain.write_text((ROOT / "configs/smoke.yaml").read_text() + "steps:\n  train:\n    enable_cache: false\n")
    third = run_cli(PIPELINE + [str(retrain)], zenml_env, timeout=900)
    assert third.returncode == 0, (third.stdout + third.stderr)[-6000:]
    state = inspect(zenml_env)
    statuses = {name: s["status"].lower().rsplit(".", 1)[-1] for name, s in state["steps"].items()}
    assert statuses["build_sft"] == statuses["annotate"] == "cached" and statuses["train"] == "completed", statuses
    third_keys = (set(state["mlflow_params"]), set(state["mlflow_metrics"]))
    assert third_keys[0] == first_keys[0], first_keys[0] ^ third_keys[0]
    assert third_keys[1] == first_keys[1], first_keys[1] ^ third_keys[1]


def test_bad_config_fails_before_any_step(tmp_path, zenml_env):
    bad = tmp_path / "bad.yaml"
    text = (ROOT / "configs/smoke.yaml").read_text().replace("max_steps: 4", "max_steps: 4\n      learning_rat: 0.1")
    bad.write_text(text)
    done = run_cli(PIPELINE + [str(bad)], zenml_env, timeout=300)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "Step sample_corpus has started" not in output
    # one message naming the file and the key as the YAML spells it, no traceback (distill_ner.errors)
    assert f"error: {bad}: invalid configuration (1 error)" in output
    assert "parameters.config.train.learning_rat: unknown key" in output
    assert "Traceback" not in output and "pipeline_definition.py" not in output, output[-3000:]
    # the pipeline loaded without torch: a config error costs ZenML's start-up, not the model libraries'
    assert "PyTorch version" not in output


@pytest.mark.parametrize(
    "pipeline, config",
    [
        ("pipelines.distill_ner.distill_ner", "configs/smoke.yaml"),
        ("pipelines.evaluate_ner.evaluate_ner", "configs/evaluate_smollm2_base_cpu.yaml"),
        ("pipelines.distill_extraction.distill_extraction", "configs/extract_demo.yaml"),
    ],
)
def test_stack_without_mlflow_is_refused_before_any_step(pipeline, config, zenml_env):
    # a fresh ZenML store: its `default` stack is active (local orchestrator and artifact store, no MLflow)
    done = run_cli(["zenml", "pipeline", "run", pipeline, "-c", config], zenml_env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "the active ZenML stack 'default' has no MLflow experiment tracker and no MLflow model registry" in output
    assert "distill-ner setup" in output and "Traceback" not in output, output[-3000:]
    assert "has started" not in output  # no step ran
    # nothing written: no MLflow store in the working directory (only the project's own, linked), no run in ZenML
    repo = Path(zenml_env["ZENML_REPOSITORY_PATH"])
    assert all((repo / name).is_symlink() or not (repo / name).exists() for name in ("mlflow.db", "mlruns"))
    code = "from zenml.client import Client; print(Client().list_pipeline_runs(size=1).total)"
    runs = run_cli([sys.executable, "-c", code], zenml_env)
    assert runs.returncode == 0 and runs.stdout.strip().splitlines()[-1] == "0", runs.stdout + runs.stderr[-2000:]


def test_a_step_terminated_from_outside_leaves_its_run_stopped(tiny_student, zenml_env):
    """A pod is stopped with SIGTERM (SIGKILL only after its grace period): the step that was running, and its
    run, end marked stopped or failed in ZenML, not "running" for ever."""
    import signal
    import subprocess
    import time

    import yaml

    assert run_cli(["distill-ner", "stack"], zenml_env).returncode == 0
    # the smoke config's 4 steps of the tiny model can end within the signal's 1.5 s on an idle machine: 400 cannot
    raw = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    raw["parameters"]["config"]["train"].update(max_steps=400, checkpoint_every=100)
    config = Path(zenml_env["ZENML_REPOSITORY_PATH"]) / "smoke_long_train.yaml"
    config.write_text(yaml.safe_dump(raw))
    bindir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bindir / "zenml"), *PIPELINE[1:], str(config)],
        cwd=zenml_env["ZENML_REPOSITORY_PATH"],
        env=zenml_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "Step `train` has started" in line:
                # ZenML installs its step signal handler just after saying so; the step then loads the student
                time.sleep(1.5)
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.communicate(timeout=300)[0]
        assert proc.returncode != 0, ("".join(seen) + rest)[-4000:]
    finally:
        proc.kill()
    code = (
        "from zenml.client import Client; r = Client().list_pipeline_runs(sort_by='desc:created', size=1).items[0]; "
        "print(r.status.value, r.steps['train'].status.value)"
    )
    done = run_cli([sys.executable, "-c", code], zenml_env)
    assert done.returncode == 0, done.stderr[-3000:]
    run_status, train_status = done.stdout.split()[-2:]
    assert run_status in ("stopped", "failed") and train_status in ("stopped", "failed"), (run_status, train_status)
