"""`zenml pipeline run pipelines.distill_extraction.distill_extraction -c <smoke config>` in isolated ZenML/MLflow
stores: the extract_demo config with the tiny random student, a slice of the demo corpus and a few steps."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from distill_ner.cli import TINY_STUDENT_DIR
from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

PIPELINE = ["zenml", "pipeline", "run", "pipelines.distill_extraction.distill_extraction", "-c"]
MODEL_NAME = "distill-extract-smoke"


def smoke_config(tmp_path: Path) -> Path:
    """configs/extract_demo.yaml scaled down to seconds of work on the tiny model."""
    raw = yaml.safe_load((ROOT / "configs/extract_demo.yaml").read_text())
    raw["model"] = {"name": MODEL_NAME, "tags": ["extraction", "smoke"]}
    config = raw["parameters"]["config"]
    # the tiny tokenizer splits words finely: a high limit keeps each demo text one passage (its recorded answers are found)
    config["corpus"].update(max_tokens=4096, num_passages=16)
    config["teacher"]["cache_path"] = str(tmp_path / "teacher_cache.sqlite")
    config["sft"]["max_length"] = 4096
    config["student"]["model"] = TINY_STUDENT_DIR
    config["train"].update(
        max_steps=2, per_device_batch_size=2, lora_r=4, lora_alpha=8, checkpoint_every=0, learning_rate=1e-3
    )
    config["eval"].update(max_per_kind=1, max_new_tokens=8)
    config["gate"].update(model_name=MODEL_NAME, min_f1=0.0)
    path = tmp_path / "extract_smoke.yaml"
    path.write_text(
        "# Launch: zenml pipeline run pipelines.distill_extraction.distill_extraction -c extract_smoke.yaml\n"
        + yaml.safe_dump(raw)
    )
    return path


def test_extraction_pipeline_end_to_end(tiny_student, zenml_env, tmp_path):
    assert (ROOT / "data/extraction/demo/corpus.jsonl").exists(), "run data/extraction/demo/build_demo.py"
    setup = run_cli(
        [sys.executable, "-m", "distill_ner.cli", "stack"], zenml_env
    )  # works without the console script installed
    assert setup.returncode == 0, setup.stderr[-4000:]
    # Pin this store's stack and project for every later command: the repo's .zen/config.yaml (the "active"
    # stack) is shared with every other ZenML process started in this checkout, concurrent tests included.
    ids = run_cli(
        [
            sys.executable,
            "-c",
            "from zenml.client import Client; c = Client(); print(c.get_stack('distill-ner').id, c.active_project.id)",
        ],
        zenml_env,
    )
    assert ids.returncode == 0, ids.stderr[-4000:]
    stack_id, project_id = ids.stdout.strip().splitlines()[-1].split()
    zenml_env = {**zenml_env, "ZENML_ACTIVE_STACK_ID": stack_id, "ZENML_ACTIVE_PROJECT_ID": project_id}

    done = run_cli(PIPELINE + [str(smoke_config(tmp_path))], zenml_env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    inspected = run_cli([sys.executable, "tests/inspect_run.py", "distill_extraction", MODEL_NAME], zenml_env)
    assert inspected.returncode == 0, inspected.stderr[-4000:]
    state = json.loads(inspected.stdout.strip().splitlines()[-1])

    assert state["run_status"].lower().endswith("completed")
    steps = state["steps"]
    assert set(steps) == {
        "sample_corpus",
        "generate_templates",
        "fill_templates",
        "add_extraction_negatives",
        "build_extraction_sft",
        "train",
        "evaluate_extraction",
        "register_and_promote",
    }
    assert steps["sample_corpus"]["outputs"]["passages"]["passages"] == 16
    templates = steps["generate_templates"]["outputs"]["templates"]
    assert templates["examples"] + templates["failures"] == 16
    extractions = steps["fill_templates"]["outputs"]["extractions"]
    assert extractions["filled"] == extractions["examples"] > 0
    assert steps["add_extraction_negatives"]["outputs"]["extractions_with_negatives"]["shortened"] > 0
    assert steps["build_extraction_sft"]["outputs"]["sft_dataset"]["rows"] == extractions["examples"]
    report = steps["evaluate_extraction"]["outputs"]["eval_report"]
    assert report["predictions"] == 8 and "invoice.primary" in report  # one document of each of the 8 kinds
    assert (report["primary_metric"], report["unit"]) == ("tree score", "documents")

    metrics = state["mlflow_metrics"]
    assert "extract.avg_tree_score" in metrics and "teacher.filling.cache_hits" in metrics
    [version] = state["model_versions"]
    # read from the version's tags: MLflow's search_model_versions leaves `aliases` empty
    assert version["tags"]["gate.passed"] == "true", version["tags"].get("gate.reasons")
    assert "promoted v1 to production" in version["tags"]["gate.reasons"]
    assert json.loads(version["tags"]["gate.metrics"])["coverage"] == dict.fromkeys(
        json.loads(version["tags"]["gate.metrics"])["f1"], 1
    )

    # the registered version is the extraction pyfunc (logged from code): template rows in, fillings out
    load = run_cli(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import json, mlflow
        from distill_ner.console import use_tracking_uri
        use_tracking_uri()
        model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@production")
        out = model.predict([{{"text": "Ann met Bo.", "template": json.dumps({{"who": []}})}}])
        print(json.dumps(sorted(out[0])))
    """),
        ],
        zenml_env,
    )
    assert load.returncode == 0, load.stderr[-4000:]
    assert json.loads(load.stdout.strip().splitlines()[-1]) == ["filled", "raw", "text"]
