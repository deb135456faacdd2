"""`distill-ner compare`: two runs of a real sqlite MLflow store side by side, by name or as the last two."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pytest

from distill_ner.cli import main


@pytest.fixture()
def two_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("distill_ner")
    ids = []
    for name, lr, f1 in (("run-a", "5e-4", 0.10), ("run-b", "2e-3", 0.25)):
        with mlflow.start_run(run_name=name) as run:
            mlflow.log_params({"train.learning_rate": lr, "train.method": "lora"})
            for step, loss in enumerate((1.3, 1.0 if name == "run-a" else 0.8)):
                mlflow.log_metric("train/loss", loss, step=step)
            mlflow.log_metric("eval/distill_ner_demo/f1", f1)
            mlflow.set_tags({"gate.passed": str(f1 > 0.2).lower(), "gate.reasons": "floor\nmargin", "team": "ner"})
            ids.append(run.info.run_id)
    return ids[0], ids[1]


def test_compare_by_name_prints_differences_metrics_and_ui_link(two_runs, capsys):
    main(["compare", "run-a", "run-b", "--port", "5099"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "| run | run-a | run-b |"
    assert "| param train.learning_rate | 5e-4 | 2e-3 |" in lines
    assert not any("train.method" in line or "team" in line for line in lines)  # equal in both: not a difference
    assert (
        "| tag gate.passed | false | true |" in lines
        and "| tag gate.reasons | floor; margin | floor; margin |" not in lines
    )
    assert not any(line.startswith("| tag mlflow.") for line in lines)
    assert "| eval/distill_ner_demo/f1 | 0.1 | 0.25 |" in lines
    assert "| train/loss | 1 | 0.8 |" in lines  # the last value of each curve
    link = unquote(out.split("compare-runs?runs=")[1].split("&")[0])
    assert json.loads(link) == list(two_runs)
    assert "http://127.0.0.1:5099/#/compare-runs" in out


def test_compare_last_two_and_unknown_names(two_runs, capsys):
    main(["compare", "--experiment", "distill_ner", "--all-params"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| run | run-a | run-b |" and "| param train.method | lora | lora |" in out
    main(["compare", "run-a", "run-b", "--keys", "f1$|learning_rate"])
    rows = capsys.readouterr().out.split("\n\n")[0].splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| param train.learning_rate", "| eval/distill_ner_demo/f1"]
    with pytest.raises(SystemExit, match="not a regular expression"):
        main(["compare", "run-a", "run-b", "--keys", "("])
    with pytest.raises(SystemExit, match="no MLflow run with id or name 'nope'"):
        main(["compare", "run-a", "nope"])
    with pytest.raises(SystemExit, match="no MLflow experiment named 'other'"):
        main(["compare", "--experiment", "other"])


def test_compare_last_one_shows_that_run_whole(two_runs, capsys):
    main(["compare", "--experiment", "distill_ner", "--last", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| run | run-b |"
    # one run differs from nothing: every parameter and tag is shown
    assert "| param train.method | lora |" in lines and "| param train.learning_rate | 2e-3 |" in lines
    assert "| eval/distill_ner_demo/f1 | 0.25 |" in lines


def test_compare_without_finished_runs_says_so(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path}/empty.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient().create_experiment("distill_ner", artifact_location=str(tmp_path / "artifacts"))
    with pytest.raises(SystemExit, match="no finished run in experiment 'distill_ner'; run the pipeline first"):
        main(["compare", "--experiment", "distill_ner", "--last", "1"])
