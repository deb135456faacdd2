"""What the pipeline adds to its MLflow run: dataset inputs with digests, the F1 chart and table, views,
the description, system metrics and true teacher parameters, in a real sqlite MLflow store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_registry import mlflow_template  # noqa: F401

from distill_ner import tracking
from distill_ner.config import TeacherConfig


@pytest.fixture()
def run(tmp_path: Path, mlflow_template: Path):  # noqa: F811
    import mlflow

    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run(experiment_id=experiment) as active:
        yield client, active.info.run_id
    mlflow.set_tracking_uri(previous)


def test_nothing_is_logged_without_a_run() -> None:
    assert not tracking.log_dataset([{"text": "a"}], "x", "training")
    assert not tracking.log_f1_chart({"a": 0.5})
    assert not tracking.log_dev_curve([{"step": 1.0, "dev_score": 0.5}], 1)
    assert not tracking.log_stage({"a": 1}, {"b": 2.0})
    assert not tracking.describe_run("d")
    with tracking.system_metrics():
        pass


def test_datasets_chart_views_and_description_land_in_the_run(run, tmp_path: Path) -> None:
    client, run_id = run
    rows = [
        {"id": "1", "text": "Marie Curie", "entities": [{"text": "Marie Curie", "type": "person"}]},
        {"id": "2", "text": "Paris"},
    ]
    assert tracking.log_dataset(rows, "sft_set", "training")
    tracking.log_dataset([{"text": "x", "gold": ["y"]}], "bench_a", "evaluation")
    assert tracking.log_f1_chart({"bench_a": 0.25, "bench_b": 0.5})
    tracking.log_text_view("<html>view</html>", "views/eval_report.html")
    description = tracking.run_description(
        recipe="distill_ner",
        teacher="gpt-x",
        student="tiny (lora)",
        counts={"SFT rows": 24},
        f1={"bench_a": 0.25, "bench_b": 0.5},
        outcome=["promoted"],
    )
    tracking.describe_run(description, tags={"result.avg_f1": "0.3750"})

    data = client.get_run(run_id)
    inputs = {d.dataset.name: d for d in data.inputs.dataset_inputs}
    assert set(inputs) == {"sft_set", "bench_a"}
    assert all(d.dataset.digest for d in inputs.values())
    assert {t.value for t in inputs["sft_set"].tags if t.key == "mlflow.data.context"} == {"training"}
    # list cells are JSON strings, so the digest covers them: another entity, another digest
    other = tracking.log_dataset([{**rows[0], "entities": []}, rows[1]], "sft_set_2", "training")
    assert other
    digests = {d.dataset.name: d.dataset.digest for d in client.get_run(run_id).inputs.dataset_inputs}
    assert digests["sft_set"] != digests["sft_set_2"]

    assert data.data.tags["mlflow.note.content"].startswith("**distill_ner**: teacher `gpt-x`")
    assert "| bench_b | 0.5000 |" in data.data.tags["mlflow.note.content"]
    assert (
        "| average | 0.3750 |" in data.data.tags["mlflow.note.content"] and data.data.tags["result.avg_f1"] == "0.3750"
    )
    artifacts = Path(data.info.artifact_uri.removeprefix("file://"))
    png = (artifacts / tracking.F1_CHART).read_bytes()
    assert png.startswith(b"\x89PNG")
    table = json.loads((artifacts / tracking.F1_TABLE).read_text())
    assert table["columns"] == ["benchmark", "f1"] and table["data"] == [["bench_a", 0.25], ["bench_b", 0.5]]
    assert (artifacts / "views/eval_report.html").read_text() == "<html>view</html>"


def test_system_metrics_are_logged_while_the_block_runs(run) -> None:
    import time

    pytest.importorskip("psutil")
    client, run_id = run
    with tracking.system_metrics(sampling_interval_s=0.2):
        time.sleep(1.5)
    metrics = client.get_run(run_id).data.metrics
    assert any(key.startswith("system/cpu_utilization") for key in metrics), sorted(metrics)


def test_a_block_shorter_than_the_sampling_interval_still_logs_system_metrics(run) -> None:
    pytest.importorskip("psutil")
    client, run_id = run
    with tracking.system_metrics(sampling_interval_s=30.0):
        pass
    metrics = client.get_run(run_id).data.metrics
    assert any(key.startswith("system/cpu_utilization") for key in metrics), sorted(metrics)


def test_offline_teacher_is_logged_as_recorded_without_api_settings(tmp_path: Path) -> None:
    recorded = tmp_path / "answers.jsonl"
    recorded.write_text("")
    offline = tracking.teacher_params(TeacherConfig(model="gpt-x", offline=True, recorded_responses=[str(recorded)]))
    assert offline["teacher.backend"] == "recorded" and offline["teacher.model"] == "gpt-x"
    assert offline["teacher.recorded_responses"] == str(recorded)
    assert not any(k.startswith(("teacher.api_key", "teacher.base_url", "teacher.concurrency")) for k in offline)
    online = tracking.teacher_params(TeacherConfig(model="gpt-x"))
    assert online["teacher.backend"] == "openai" and online["teacher.api_key_env"] == "OPENAI_API_KEY"


def test_dev_curve_and_stage_logging_land_in_the_run(run) -> None:
    client, run_id = run
    history = [{"step": 7.0, "dev_loss": 0.8, "dev_score": 0.4}, {"step": 14.0, "dev_loss": 0.6, "dev_score": 0.5}]
    assert tracking.log_dev_curve(history, best_step=14)
    # outside a ZenML step the record half is skipped; the MLflow half still logs
    assert tracking.log_stage({"sft.dev_fraction": 0.1}, {"sft.dev_passages": 30})
    data = client.get_run(run_id)
    assert data.data.params["sft.dev_fraction"] == "0.1" and data.data.metrics["sft.dev_passages"] == 30.0
    artifacts = Path(data.info.artifact_uri.removeprefix("file://"))
    assert (artifacts / tracking.DEV_CURVE_CHART).read_bytes().startswith(b"\x89PNG")
    assert tracking.replay_cached_steps() == 0  # no ZenML step here: nothing to replay, nothing raised
