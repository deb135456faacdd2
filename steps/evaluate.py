from pathlib import Path
from typing import Annotated

import mlflow
from zenml import step
from zenml.config.cache_policy import CachePolicy

from distill_ner import evaluation, inference, metrics
from distill_ner.config import EvalConfig
from distill_ner.records import EvalReport
from materializers import EvalReportMaterializer
from steps._stack import experiment_tracker_name


@step(
    output_materializers=EvalReportMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[evaluation, inference, metrics]),
)
def evaluate(model: Path, config: EvalConfig, benchmarks_fingerprint: str) -> Annotated[EvalReport, "eval_report"]:
    """Score the model on every benchmark with the UniNER metric (and seqeval where gold is token-level)."""
    report = evaluation.evaluate_model(str(model), config)
    if mlflow.active_run():
        mlflow.log_metrics(evaluation.report_metrics(report))
    return report
